"""Feast operations used by the CLI and the tests: apply, materialize, stream, online read,
and the historical (point-in-time) join of either offline store configuration."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from mlops import features as F
from mlops.data import REALTIME_PARQUETS, DataError, is_prepared

# The configuration of the repository with Spark as the offline store (``feature_repo/``).
SPARK_YAML = "feature_store.spark.yaml"


def open_store(repo_path: Path, fs_yaml: str | None = None) -> Any:
    """The repository's FeatureStore, configured by the yaml ``fs_yaml`` names (e.g.
    :data:`SPARK_YAML`), else as Feast chooses: FEAST_FS_YAML_FILE_PATH or ``feature_store.yaml``.
    """
    from feast import FeatureStore  # heavy import kept out of module import
    from feast.utils import get_default_yaml_file_path

    if not (repo_path / (fs_yaml or "feature_store.yaml")).is_file():
        raise DataError(
            f"no Feast repository at {repo_path} ({fs_yaml or 'feature_store.yaml'} missing)"
        )
    path = repo_path / fs_yaml if fs_yaml else get_default_yaml_file_path(repo_path)
    store = FeatureStore(repo_path=str(repo_path), fs_yaml_file=path)
    _check_spark_time_zone(store.config.offline_store, path)
    return store


def _check_spark_time_zone(offline_store: Any, path: Path) -> None:
    """Refuse a Spark offline store whose session time zone is not UTC.

    Feast writes the join's time bounds as naive UTC strings and Spark returns naive timestamps
    in its session time zone: in any other zone the join and its output shift silently.
    """
    if getattr(offline_store, "type", None) != "spark":
        return
    zone = (offline_store.spark_conf or {}).get("spark.sql.session.timeZone")
    if zone != "UTC":
        raise DataError(
            f"{path}: offline_store.spark_conf['spark.sql.session.timeZone'] must be UTC "
            f"(got {zone!r}): Feast's point-in-time bounds are naive UTC"
        )


def apply(repo_path: Path, fs_yaml: str | None = None) -> list[str]:
    """Register the repository's definitions, as ``feast apply`` does; return the view names.

    Args:
        repo_path: The Feast repository, with prepared data.
        fs_yaml: Another configuration of the repository, e.g. :data:`SPARK_YAML`; its own
            registry receives the definitions built for its offline store.
    """
    if not is_prepared(repo_path / "data"):
        raise DataError(f"{repo_path / 'data'} has no prepared sources; run `mlops prepare`")
    store_args = ["-f", fs_yaml] if fs_yaml else []
    # The real `feast apply` CLI of this environment, run in the repo as a user would run it.
    feast = Path(sys.executable).with_name("feast")
    proc = subprocess.run(
        [str(feast), *store_args, "apply"],
        cwd=repo_path,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise DataError(f"feast apply failed in {repo_path}:\n{proc.stderr[-2000:]}")
    return sorted(v.name for v in open_store(repo_path, fs_yaml).list_feature_views())


def historical_features(
    repo_path: Path, entities: pd.DataFrame, fs_yaml: str | None = None
) -> pd.DataFrame:
    """The feature service's point-in-time join onto ``entities``, as the offline store returns it.

    Rows come in the store's own order; ``event_timestamp`` is UTC-aware whichever store ran
    the join (Spark returns naive timestamps of its session time zone, which must be UTC).

    Args:
        repo_path: The Feast repository (applied with ``fs_yaml``).
        entities: Entity rows: the join keys and ``event_timestamp``.
        fs_yaml: The configuration to join with; None chooses as :func:`open_store` does.
    """
    store = open_store(repo_path, fs_yaml)
    service = store.get_feature_service(F.FEATURE_SERVICE)
    # Spark's store rewrites the entity frame's timestamp column in place.
    joined = store.get_historical_features(entity_df=entities.copy(), features=service).to_df()
    ts = joined[F.EVENT_TIMESTAMP]
    if ts.dt.tz is None:
        joined[F.EVENT_TIMESTAMP] = ts.dt.tz_localize("UTC")
    return joined


def materialize(repo_path: Path, start: datetime, end: datetime) -> None:
    """Load the newest feature values in ``[start, end]`` into the online store."""
    open_store(repo_path).materialize(start_date=start, end_date=end)


def online_features(repo_path: Path, entity_rows: list[dict[str, str]]) -> pd.DataFrame:
    """Read the feature service's features for ``entity_rows`` from the online store."""
    store = open_store(repo_path)
    service = store.get_feature_service(F.FEATURE_SERVICE)
    return store.get_online_features(features=service, entity_rows=entity_rows).to_df()


def push_source_name(view: str) -> str:
    """The Feast push source of a real-time view (``feature_repo/definitions.py``)."""
    return f"{view}_push"


@dataclass
class StreamReport:
    """What a replay pushed into the online store.

    Attributes:
        rows: Rows pushed per real-time view (before the per-batch reduction to the newest row of
            each entity, which leaves the online store in the same state).
        batches: Push batches sent.
        first, last: Event timestamps of the first and the last row pushed.
        truncated: ``max_rows`` stopped the replay before ``end``.
        seconds: Wall time of the replay.
    """

    rows: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None
    truncated: bool = False
    seconds: float = 0.0

    @property
    def total(self) -> int:
        """Rows pushed over all views."""
        return sum(self.rows.values())


def _utc_timestamp(value: datetime | str, name: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as err:
        raise DataError(f"{name} {value!r} is not an ISO date or time: {err}") from err
    if ts is pd.NaT:
        raise DataError(f"{name} is missing")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def realtime_rows(
    data_dir: Path, start: pd.Timestamp, end: pd.Timestamp
) -> dict[str, pd.DataFrame]:
    """The prepared rows of every real-time view stamped in ``[start, end]``, in time order."""
    out = {}
    for view in F.REALTIME_VIEWS:
        path = data_dir / REALTIME_PARQUETS[view]
        if not path.is_file():
            raise DataError(f"{path} missing; run `mlops prepare`")
        df = pd.read_parquet(
            path, filters=[(F.EVENT_TIMESTAMP, ">=", start), (F.EVENT_TIMESTAMP, "<=", end)]
        )
        out[view] = df.sort_values(F.EVENT_TIMESTAMP, kind="stable").reset_index(drop=True)
    return out


def _timeline(rows: dict[str, pd.DataFrame], max_rows: int | None) -> tuple[pd.Series, bool]:
    """Rows per distinct timestamp over all views, cut to whole timestamps within ``max_rows``."""
    counts = pd.concat([df[F.EVENT_TIMESTAMP] for df in rows.values()]).value_counts().sort_index()
    if max_rows is None or counts.sum() <= max_rows:
        return counts, False
    kept = counts[counts.cumsum() <= max_rows]
    if kept.empty:
        raise DataError(
            f"--max-rows {max_rows} is smaller than the {int(counts.iloc[0])} rows of the first "
            f"timestamp {counts.index[0]}; a timestamp is pushed whole"
        )
    return kept, True


def _batches(counts: pd.Series, speed: float, batch_rows: int) -> list[pd.Timestamp]:
    """The last timestamp of each push batch: one per timestamp when paced, else up to
    ``batch_rows`` rows of whole timestamps."""
    if speed > 0:
        return list(counts.index)
    ends, acc = [], 0
    for ts, n in counts.items():
        acc += int(n)
        if acc >= batch_rows:
            ends.append(ts)
            acc = 0
    if acc:
        ends.append(counts.index[-1])
    return ends


class RealtimeFeed:
    """The real-time views' rows of a time range, pushed online in time order as time advances.

    One ``FeatureStore`` and one read of the prepared rows serve every :meth:`advance`, so a
    caller can move the online store forward moment by moment (the shadow replay does, before
    each request) as cheaply as :func:`stream` pushes a whole range.
    """

    def __init__(self, repo_path: Path, rows: dict[str, pd.DataFrame]) -> None:
        self._store = open_store(repo_path)
        self._rows = rows
        self._times = {v: pd.DatetimeIndex(df[F.EVENT_TIMESTAMP]) for v, df in rows.items()}
        self._next: pd.Timestamp | None = None  # everything before it has been pushed

    @classmethod
    def of_range(cls, repo_path: Path, start: pd.Timestamp, end: pd.Timestamp) -> RealtimeFeed:
        """The feed of ``[start, end]`` (UTC) from the repository's prepared data."""
        if not is_prepared(repo_path / "data"):
            raise DataError(f"{repo_path / 'data'} has no prepared sources; run `mlops prepare`")
        return cls(repo_path, realtime_rows(repo_path / "data", start, end))

    def advance(self, to: pd.Timestamp) -> dict[str, int]:
        """Push every row stamped up to ``to`` not pushed yet; the rows pushed per view.

        Within one call only each entity's newest row is sent: the online store ends in the
        same state as pushing every row in order.
        """
        from feast.data_source import PushMode

        pushed = {}
        for view, df in self._rows.items():
            # Rows are sorted by time: what is due is one slice.
            i = 0 if self._next is None else self._times[view].searchsorted(self._next, "left")
            j = self._times[view].searchsorted(to, side="right")
            part = df.iloc[i:j]
            if part.empty:
                continue
            newest = part.drop_duplicates(list(F.VIEW_KEYS[view]), keep="last")
            self._store.push(push_source_name(view), newest, to=PushMode.ONLINE)
            pushed[view] = len(part)
        self._next = to + pd.Timedelta(1, "ns")
        return pushed


def stream(
    repo_path: Path,
    start: datetime | str,
    end: datetime | str,
    speed: float = 0.0,
    max_rows: int | None = None,
    batch_rows: int = 5000,
    echo: Callable[[str], None] | None = None,
) -> StreamReport:
    """Replay the real-time views' rows of ``[start, end]`` into the online store, in time order.

    The stand-in for a live feed: a stream job that, at each scheduled departure, emits the rows
    computed from the departures before it. Rows go through ``FeatureStore.push`` to each view's
    push source, so they land where a real feed's would.

    Args:
        repo_path: The Feast repository (applied, with prepared data).
        start, end: Inclusive range of event timestamps (UTC when naive).
        speed: 0 replays as fast as possible; N replays N times real time (a gap of 60 s between
            two timestamps sleeps 60/N s).
        max_rows: Stop after at most this many rows (whole timestamps only).
        batch_rows: Rows per push when ``speed`` is 0. Within a batch only each entity's newest
            row is pushed: the online store ends in the same state as pushing every row in order.
        echo: Called with one line per batch.

    Raises:
        DataError: A bad range, speed or bound, or no row in the range.
    """
    t_start, t_end = _utc_timestamp(start, "--start"), _utc_timestamp(end, "--end")
    if t_start > t_end:
        raise DataError(f"--start {t_start} is after --end {t_end}")
    if speed < 0:
        raise DataError(f"--speed must be >= 0 (0 = as fast as possible), got {speed}")
    if max_rows is not None and max_rows <= 0:
        raise DataError(f"--max-rows must be positive, got {max_rows}")
    if batch_rows <= 0:
        raise DataError(f"batch_rows must be positive, got {batch_rows}")
    if not is_prepared(repo_path / "data"):
        raise DataError(f"{repo_path / 'data'} has no prepared sources; run `mlops prepare`")
    rows = realtime_rows(repo_path / "data", t_start, t_end)
    if all(df.empty for df in rows.values()):
        raise DataError(f"no real-time rows between {t_start} and {t_end}; the data covers 2013")
    counts, truncated = _timeline(rows, max_rows)
    feed = RealtimeFeed(repo_path, rows)
    report = StreamReport(rows={view: 0 for view in rows}, truncated=truncated)
    t0 = time.perf_counter()
    prev: pd.Timestamp | None = None
    lo = counts.index[0]
    for batch_end in _batches(counts, speed, batch_rows):
        if speed > 0 and prev is not None:
            time.sleep((batch_end - prev).total_seconds() / speed)
        pushed = feed.advance(batch_end)
        for view, n in pushed.items():
            report.rows[view] += n
        report.batches += 1
        report.first = report.first or lo
        report.last = batch_end
        if echo:
            echo(f"pushed {lo} .. {batch_end}: " + ", ".join(f"{v} {n}" for v, n in pushed.items()))
        prev, lo = batch_end, batch_end + pd.Timedelta(1, "ns")
    report.seconds = time.perf_counter() - t0
    return report
