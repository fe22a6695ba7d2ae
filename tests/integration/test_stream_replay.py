"""`mlops stream` replays the real-time rows into the online store; online equals offline at T.

Real Feast store (SQLite online, DuckDB offline), real prepared data. After replaying up to T,
the online values of real flights scheduled at T (read through the v2 feature service) equal the
offline point-in-time values for the same flights at T.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops import features as F
from mlops.errors import DataError

pytestmark = pytest.mark.integration

RT_NAMES = [f.name for f in F.REALTIME_FEATURES]


@pytest.fixture(scope="module")
def repo(prepared_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the prepared repo, so pushes never reach another test's online store."""
    copy = tmp_path_factory.mktemp("stream") / "repo"
    shutil.copytree(prepared_repo, copy)
    return copy


@pytest.fixture(scope="module")
def busy_moment(repo: Path) -> tuple[pd.Timestamp, pd.DataFrame]:
    """The February 2013 afternoon moment with the most flights scheduled, and those flights.

    Afternoon (15-23 UTC): the airports have been busy for hours, so every view has history.
    """
    flights = pd.read_parquet(repo / "data" / "flights.parquet")
    feb = flights[flights[F.SPAN] == "2013-02"]
    feb = feb[feb[F.EVENT_TIMESTAMP].dt.hour.between(15, 23)]
    t = feb[F.EVENT_TIMESTAMP].value_counts().idxmax()
    return t, feb[feb[F.EVENT_TIMESTAMP] == t]


def _online(repo: Path, flights: pd.DataFrame) -> np.ndarray:
    from mlops.feast_ops import online_features

    rows = flights[[F.ORIGIN, F.CARRIER, F.TAILNUM]].to_dict("records")
    return online_features(repo, rows)[RT_NAMES].to_numpy(dtype=float)


def test_online_after_replay_equals_offline_point_in_time(
    repo: Path, busy_moment: tuple[pd.Timestamp, pd.DataFrame]
) -> None:
    from feast import FeatureStore

    from mlops.feast_ops import stream

    t, flights = busy_moment
    assert flights[F.ORIGIN].nunique() >= 2 and flights[F.CARRIER].nunique() >= 3
    assert (flights[F.TAILNUM] != F.MISSING_CATEGORY).sum() >= 5
    store = FeatureStore(repo_path=str(repo))
    offline = store.get_historical_features(
        entity_df=flights[[F.FLIGHT_ID, F.EVENT_TIMESTAMP, F.ORIGIN, F.CARRIER, F.TAILNUM]],
        features=store.get_feature_service(F.FEATURE_SERVICE),
    ).to_df()
    offline = offline.set_index(F.FLIGHT_ID).loc[flights[F.FLIGHT_ID], RT_NAMES]
    expected = offline.to_numpy(dtype=float)
    assert np.isfinite(expected).sum() > expected.size // 2  # real values, not all missing

    # Up to one minute before T the online store is one step behind: it must differ.
    before = stream(repo, t - pd.Timedelta(hours=4), t - pd.Timedelta(minutes=1), batch_rows=300)
    assert before.batches > 1 and before.last is not None and before.last < t
    stale = _online(repo, flights)
    assert not np.array_equal(stale, expected, equal_nan=True)

    # The moment T itself: now online equals the offline point-in-time values, NaN == NaN.
    at_t = stream(repo, t, t)
    assert at_t.first == t and at_t.last == t and at_t.total > 0
    np.testing.assert_array_equal(_online(repo, flights), expected)


def test_paced_replay_sleeps_scaled_gaps_and_stops_at_max_rows(
    repo: Path, busy_moment: tuple[pd.Timestamp, pd.DataFrame]
) -> None:
    from mlops.feast_ops import stream

    t, _ = busy_moment
    lines: list[str] = []
    t0 = time.perf_counter()
    # 20 minutes of feed at 600x real time: about 2 s of sleeps, one push per timestamp.
    report = stream(repo, t - pd.Timedelta(minutes=20), t, speed=600, echo=lines.append)
    elapsed = time.perf_counter() - t0
    span = (report.last - report.first).total_seconds() if report.first and report.last else 0
    assert span >= 15 * 60
    assert elapsed >= span / 600
    assert report.batches == len(lines) > 5
    bounded = stream(repo, t - pd.Timedelta(hours=2), t, max_rows=50)
    assert bounded.truncated and 0 < bounded.total <= 50 and bounded.last is not None
    assert bounded.last < t


@pytest.mark.parametrize(
    ("start", "end", "kwargs", "message"),
    [
        ("2013-02-10T12:00", "2013-02-10T11:00", {}, "is after --end"),
        ("2015-01-01", "2015-01-02", {}, "no real-time rows"),
        ("yesterday-ish", "2013-02-10", {}, "--start 'yesterday-ish' is not an ISO"),
        ("2013-02-10", "2013-02-11", {"speed": -1.0}, "--speed must be >= 0"),
        ("2013-02-10", "2013-02-11", {"max_rows": 0}, "--max-rows must be positive"),
    ],
)
def test_bad_ranges_and_bounds_are_readable_errors(
    repo: Path, start: str, end: str, kwargs: dict[str, float], message: str
) -> None:
    from mlops.feast_ops import stream

    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        stream(repo, start, end, **kwargs)  # type: ignore[arg-type]


def test_cli_stream_prints_what_it_pushed(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlops.cli import main

    config = tmp_path / "mlops.yaml"
    config.write_text(f"feature_repo: {repo}\n")
    argv = ["--config", str(config), "stream", "--start", "2013-02-10T13:00", "--end"]
    assert main([*argv, "2013-02-10T14:00"]) == 0
    out = capsys.readouterr().out
    assert "real-time rows" in out and "origin_departures_rt" in out and "range complete" in out
    assert main([*argv, "2013-02-10T12:00"]) == 2
    assert "mlops stream: error: --start 2013-02-10 13:00:00+00:00 is after --end" in (
        capsys.readouterr().err
    )
