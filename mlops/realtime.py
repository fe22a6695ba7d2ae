"""Real-time features: what had happened at the airport and to the aircraft before a flight's
scheduled departure.

The prediction moment of a flight is its scheduled departure ``T`` (UTC, its event timestamp). A
flight's departure event happens at its actual departure time, scheduled departure plus
``dep_delay`` minutes; a cancelled flight (``dep_delay`` missing) is scheduled but never departs.
Only events strictly before ``T`` reach a value for ``T``, and only those of flights scheduled
before ``T``: 54 % of flights leave a few minutes early, so "departed before T" alone would let a
flight's own departure (and those of its peers scheduled at T) into its features, the own outcome
under another name. The flight being predicted is never one of its own "previous departures".

Rows are emitted at prediction moments: one row per distinct scheduled departure time of the
view's entity (per origin, per carrier and origin, per tail number at that tail's own scheduled
departures), stamped ``event_timestamp = T``. Feast's point-in-time join (latest row with
timestamp <= T) therefore returns exactly the row computed for T, and a stream job that emits at
each scheduled departure (the schedule is known in advance) writes the same rows online.

Everything is vectorised per entity (sorted arrays, ``np.searchsorted``, cumulative sums), so a
full year of flights takes seconds. Base layer: pandas and numpy only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlops import features as F

# Columns of the schedule table the views are computed from (see ``schedule_frame``).
SCHED = "sched_dep"  # scheduled departure, UTC
DEP_DELAY = "dep_delay"  # minutes; NaN for a cancelled flight
SCHEDULE_COLUMNS: tuple[str, ...] = (SCHED, DEP_DELAY, F.ORIGIN, F.CARRIER, F.TAILNUM)

# The local calendar of the airports: "the same day" of an aircraft's rotation.
LOCAL_TZ = "America/New_York"

_MINUTE_NS = 60 * 10**9


def schedule_frame(
    sched_dep: pd.Series,
    dep_delay: pd.Series,
    origin: pd.Series,
    carrier: pd.Series,
    tailnum: pd.Series,
) -> pd.DataFrame:
    """The schedule with departure outcomes: one row per scheduled flight, cancelled ones included.

    Args:
        sched_dep: Scheduled departure, tz-aware (converted to UTC).
        dep_delay: Departure delay in minutes, NaN when the flight never departed.
        origin, carrier, tailnum: Entity keys; a missing tail number is ``F.MISSING_CATEGORY``.
    """
    return pd.DataFrame(
        {
            SCHED: pd.to_datetime(sched_dep, utc=True).astype("datetime64[ns, UTC]"),
            DEP_DELAY: dep_delay.astype("float64"),
            F.ORIGIN: origin.astype(str),
            F.CARRIER: carrier.astype(str),
            F.TAILNUM: tailnum.fillna(F.MISSING_CATEGORY).astype(str),
        }
    ).reset_index(drop=True)


def _ns(ts: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 nanoseconds."""
    return ts.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]").astype(np.int64)


def _departures(schedule: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scheduled ns, actual departure ns (int64 max when cancelled), departure delay."""
    sched = _ns(schedule[SCHED])
    delay = schedule[DEP_DELAY].to_numpy(dtype=np.float64)
    departed = ~np.isnan(delay)
    actual = np.full(len(sched), np.iinfo(np.int64).max, dtype=np.int64)
    # Delays are whole minutes in the data; a fractional one is rounded to the nanosecond.
    actual[departed] = sched[departed] + np.round(delay[departed] * _MINUTE_NS).astype(np.int64)
    return sched, actual, delay


def _window_stats(
    moments: np.ndarray,
    by_actual: tuple[np.ndarray, np.ndarray, np.ndarray],
    by_sched: tuple[np.ndarray, np.ndarray, np.ndarray],
    minutes: int,
) -> dict[str, np.ndarray]:
    """Count, mean delay and delayed share of departures in [T - w, T) of flights scheduled < T.

    Args:
        moments: Prediction moments, ns.
        by_actual: (actual, sched, delay) of departed flights sorted by actual departure.
        by_sched: The same arrays sorted by scheduled departure.
        minutes: Window length w.
    """
    actual, _, delay = by_actual
    hi = np.searchsorted(actual, moments, side="left")  # first event at or after T: excluded
    lo = np.searchsorted(actual, moments - minutes * _MINUTE_NS, side="left")
    csum = np.concatenate(([0.0], np.cumsum(delay)))
    late = delay > F.DELAY_THRESHOLD_MINUTES
    cdel = np.concatenate(([0], np.cumsum(late)))
    count = (hi - lo).astype(np.float64)
    total = csum[hi] - csum[lo]
    delayed = (cdel[hi] - cdel[lo]).astype(np.float64)
    # Take out the early departures of flights scheduled at or after T (their departure is before
    # T but they are not earlier flights). No flight leaves more than ``early`` before schedule,
    # so they sit in a short run of the schedule from T on: loop over positions in that run.
    s_actual, s_sched, s_delay = by_sched
    early = int(np.max(s_sched - s_actual, initial=0))
    if early > 0 and len(s_sched):
        start = np.searchsorted(s_sched, moments, side="left")
        stop = np.searchsorted(s_sched, moments + early, side="right")
        for k in range(int((stop - start).max(initial=0))):
            idx = np.minimum(start + k, len(s_sched) - 1)
            hit = (start + k < stop) & (s_actual[idx] < moments)
            hit &= s_actual[idx] >= moments - minutes * _MINUTE_NS
            count -= hit
            total -= np.where(hit, s_delay[idx], 0.0)
            delayed -= hit & (s_delay[idx] > F.DELAY_THRESHOLD_MINUTES)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, np.nan)
        share = np.where(count > 0, delayed / count, np.nan)
    return {"deps": count, "dep_delay": mean, "delayed_share": share}


def _pending(
    moments: np.ndarray, sched_sorted: np.ndarray, actual_by_sched: np.ndarray, minutes: int
) -> np.ndarray:
    """Flights scheduled in [T - w, T) whose departure is not before T (or never happens).

    Both arrays are sorted by scheduled time. A window holds a few dozen flights, so the loop
    runs over positions within the window, each step vectorised over every moment.
    """
    lo = np.searchsorted(sched_sorted, moments - minutes * _MINUTE_NS, side="left")
    hi = np.searchsorted(sched_sorted, moments, side="left")
    out = np.zeros(len(moments), dtype=np.float64)
    width = int((hi - lo).max(initial=0))
    for k in range(width):
        idx = lo + k
        inside = idx < hi
        safe = np.minimum(idx, len(sched_sorted) - 1)
        out += inside & (actual_by_sched[safe] >= moments)
    return out


def _group_rows(
    schedule: pd.DataFrame,
    keys: list[str],
    windows: tuple[int, ...],
    prefix: str,
    pending_minutes: int | None,
) -> pd.DataFrame:
    """Rows of a windowed departure view, one per distinct scheduled time of each key group."""
    sched, actual, delay = _departures(schedule)
    frames = []
    for key, idx in schedule.groupby(keys, sort=True).indices.items():
        moments = np.unique(sched[idx])
        departed = idx[~np.isnan(delay[idx])]
        order = departed[np.argsort(actual[departed], kind="stable")]
        by_actual = (actual[order], sched[order], delay[order])
        s_order = departed[np.argsort(sched[departed], kind="stable")]
        by_sched = (actual[s_order], sched[s_order], delay[s_order])
        cols: dict[str, object] = {}
        key_values = key if isinstance(key, tuple) else (key,)
        for name, value in zip(keys, key_values, strict=True):
            cols[name] = np.full(len(moments), value, dtype=object)
        cols[F.EVENT_TIMESTAMP] = moments
        for minutes in windows:
            stats = _window_stats(moments, by_actual, by_sched, minutes)
            for stat, values in stats.items():
                cols[f"{prefix}_{stat}_{minutes}m"] = values
        if pending_minutes is not None:
            # Pending counts cancelled flights too: every scheduled flight, by schedule.
            scheduled = idx[np.argsort(sched[idx], kind="stable")]
            cols[f"{prefix}_pending_{pending_minutes}m"] = _pending(
                moments, sched[scheduled], actual[scheduled], pending_minutes
            )
        frames.append(pd.DataFrame(cols))
    return _finish(frames, keys)


def _finish(frames: list[pd.DataFrame], keys: list[str]) -> pd.DataFrame:
    out = pd.concat(frames, ignore_index=True)
    out[F.EVENT_TIMESTAMP] = pd.to_datetime(out[F.EVENT_TIMESTAMP].to_numpy("int64"), utc=True)
    for key in keys:
        out[key] = out[key].astype(str)
    return out.sort_values([F.EVENT_TIMESTAMP, *keys], kind="stable").reset_index(drop=True)


def _view_columns(view: str) -> list[str]:
    return [
        *F.VIEW_KEYS[view],
        F.EVENT_TIMESTAMP,
        *(f.name for f in F.FEAST_FEATURES if f.source == view),
    ]


def origin_departures(schedule: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``origin_departures_rt``: the origin's departures in the last 60 and 180 minutes."""
    out = _group_rows(schedule, [F.ORIGIN], (60, 180), "origin", pending_minutes=60)
    return out[_view_columns(F.ORIGIN_RT_VIEW)]


def carrier_origin_departures(schedule: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``carrier_origin_departures_rt``: the carrier's departures at the origin, 120 min."""
    out = _group_rows(schedule, [F.CARRIER, F.ORIGIN], (120,), "carrier_origin", None)
    return out[_view_columns(F.CARRIER_ORIGIN_RT_VIEW)]


def aircraft_rotation(schedule: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``aircraft_rotation_rt``: the aircraft's earlier departures of the local day.

    A departure counts for T when the aircraft's flight was scheduled before T on the same local
    day (America/New_York) and departed before T. A flight without a tail number has no aircraft
    and no row (its features are missing).
    """
    known = schedule[schedule[F.TAILNUM] != F.MISSING_CATEGORY]
    sched, actual, delay = _departures(known)
    day = known[SCHED].dt.tz_convert(LOCAL_TZ).dt.date.to_numpy()
    tails = known[F.TAILNUM].to_numpy()
    moments = pd.DataFrame({F.TAILNUM: tails, "_day": day, "_t": sched}).drop_duplicates()
    departed = ~np.isnan(delay)
    events = pd.DataFrame(
        {F.TAILNUM: tails[departed], "_day": day[departed], "_s": sched[departed],
         "_a": actual[departed], "_delay": delay[departed]}
    )  # fmt: skip
    # An aircraft flies a handful of legs a day: pair every moment with every departure of the
    # aircraft's day (a few million pairs for a year) and keep the earlier flights' departures.
    pairs = (
        moments.reset_index(drop=True)
        .reset_index(names="_m")
        .merge(events, on=[F.TAILNUM, "_day"], how="inner")
    )
    pairs = pairs[(pairs["_s"] < pairs["_t"]) & (pairs["_a"] < pairs["_t"])]
    count = pairs.groupby("_m").size()
    latest = pairs.sort_values(["_m", "_a"], kind="stable").drop_duplicates("_m", keep="last")
    latest = latest.set_index("_m")
    m = moments.reset_index(drop=True)
    t = m["_t"].to_numpy()
    prev_a = latest["_a"].reindex(m.index).to_numpy(dtype=np.float64)
    out = pd.DataFrame(
        {
            F.TAILNUM: m[F.TAILNUM].astype(str),
            F.EVENT_TIMESTAMP: pd.to_datetime(t, utc=True),
            "tail_prev_dep_delay": latest["_delay"].reindex(m.index).astype("float64"),
            "tail_hours_since_prev_dep": (t - prev_a) / (3600 * 1e9),
            "tail_deps_today": count.reindex(m.index, fill_value=0).astype("float64"),
        }
    )
    out = out.sort_values([F.EVENT_TIMESTAMP, F.TAILNUM], kind="stable").reset_index(drop=True)
    return out[_view_columns(F.AIRCRAFT_RT_VIEW)]


def realtime_views(schedule: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The rows of every real-time view, keyed by view name (``F.REALTIME_VIEWS``)."""
    missing = [c for c in SCHEDULE_COLUMNS if c not in schedule.columns]
    if missing:
        raise ValueError(f"schedule lacks columns: {', '.join(missing)}")
    if schedule.empty:
        raise ValueError("schedule has no flights")
    return {
        F.ORIGIN_RT_VIEW: origin_departures(schedule),
        F.CARRIER_ORIGIN_RT_VIEW: carrier_origin_departures(schedule),
        F.AIRCRAFT_RT_VIEW: aircraft_rotation(schedule),
    }
