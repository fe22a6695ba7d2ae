"""Feast's Spark offline store: the same repository and the same point-in-time join as DuckDB.

A week of real flights, plus probe rows just inside and just outside the real-time views'
15-minute ttl, joined by both stores: the training sets must be equal row for row.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from components.ingest.core import SpanWindow, load_entities
from mlops import features as F
from mlops.data import DataError
from mlops.feast_ops import SPARK_YAML, apply, historical_features, open_store

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KEYS = [F.FLIGHT_ID, F.EVENT_TIMESTAMP]
TTL = pd.Timedelta(minutes=F.REALTIME_MAX_AGE_MINUTES)


@pytest.fixture(scope="module")
def repo(prepared_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the prepared repo applied with both configurations."""
    repo = tmp_path_factory.mktemp("spark_repo")
    shutil.copytree(prepared_repo, repo, ignore=shutil.ignore_patterns("*.db"), dirs_exist_ok=True)
    shutil.copy(ROOT / "feature_repo" / SPARK_YAML, repo / SPARK_YAML)
    apply(repo)
    apply(repo, SPARK_YAML)
    yield repo
    from pyspark.sql import SparkSession

    # The session's JVM would otherwise live on for the rest of the test run.
    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()


def entity_rows(repo: Path) -> tuple[pd.DataFrame, pd.Series]:
    """The first week of January's flights, and for 300 of them probe rows at T + ttl - 1 s,
    T + ttl and T + ttl + 1 s; with each row's age past its flight's departure T.

    Every flight has a real-time row stamped at its own T, so only the probes reach the ttl's
    edge (inclusive at T + ttl in Feast's joins), where a store could be off by one. A week, not
    the month: Spark's cost here is per job stage more than per row, and the test stays short.
    """
    january = load_entities(repo / "data", SpanWindow("2013-01", "2013-01"))
    ts = january[F.EVENT_TIMESTAMP]
    flights = january[ts < ts.min().floor("D") + pd.Timedelta(days=7)]
    sample = flights.sample(300, random_state=17)
    offsets = [pd.Timedelta(0)] * len(flights)
    probes = []
    for s in (-1, 0, 1):
        offset = TTL + pd.Timedelta(s, "s")
        probes.append(sample.assign(**{F.EVENT_TIMESTAMP: sample[F.EVENT_TIMESTAMP] + offset}))
        offsets += [offset] * len(sample)
    rows = pd.concat([flights, *probes], ignore_index=True)
    return rows, pd.Series(offsets, index=pd.MultiIndex.from_frame(rows[KEYS]))


def test_both_configurations_register_the_same_definitions(repo: Path) -> None:
    duckdb, spark = open_store(repo), open_store(repo, SPARK_YAML)
    assert duckdb.config.offline_store.type == "duckdb"
    assert spark.config.offline_store.type == "spark"
    views = {v.name: v for v in duckdb.list_feature_views()}
    spark_views = {v.name: v for v in spark.list_feature_views()}
    assert views.keys() == spark_views.keys() == {
        F.WEATHER_VIEW, F.PLANE_VIEW, F.CARRIER_STATS_VIEW, *F.REALTIME_VIEWS,
    }  # fmt: skip
    for name, view in views.items():
        other = spark_views[name]
        assert (view.ttl, view.entities, view.features) == (
            other.ttl,
            other.entities,
            other.features,
        )
        # The default configuration keeps its FileSource sources; Spark gets its own.
        assert type(view.batch_source).__name__ == "FileSource"
        assert type(other.batch_source).__name__ == "SparkSource"
        assert view.batch_source.name == other.batch_source.name
        assert view.batch_source.path == other.batch_source.path


def test_spark_builds_the_duckdb_training_set_row_for_row(repo: Path) -> None:
    entities, age = entity_rows(repo)
    duckdb = historical_features(repo, entities)
    spark = historical_features(repo, entities, SPARK_YAML)

    assert list(spark.columns) == list(duckdb.columns)
    duckdb = duckdb.sort_values(KEYS).reset_index(drop=True)
    spark = spark.sort_values(KEYS).reset_index(drop=True)
    assert len(duckdb) == len(entities)
    # Same dtypes, same values, NaN where DuckDB has NaN.
    pd.testing.assert_frame_equal(spark, duckdb, check_exact=True)

    # Not vacuous: the probes cross the ttl's edge, where the plane's own row stops joining...
    row_age = age.loc[pd.MultiIndex.from_frame(duckdb[KEYS])].to_numpy()
    has_tail = duckdb["tail_deps_today"].notna()
    assert has_tail[row_age == TTL].mean() > 0.95
    assert has_tail[row_age == TTL + pd.Timedelta(1, "s")].mean() < 0.2
    # ...and the view keyed by (carrier, origin) joins nearly every flight.
    joined = duckdb.loc[row_age == pd.Timedelta(0), "carrier_origin_deps_120m"].notna().mean()
    assert joined > 0.9, f"only {joined:.0%} of flights joined the (carrier, origin) view"


def test_a_spark_session_outside_utc_is_refused(repo: Path) -> None:
    text = (repo / SPARK_YAML).read_text()
    assert "spark.sql.session.timeZone: UTC" in text
    (repo / "other_zone.yaml").write_text(
        text.replace("spark.sql.session.timeZone: UTC", "spark.sql.session.timeZone: Europe/Paris")
    )
    with pytest.raises(DataError, match=r"spark\.sql\.session\.timeZone.*Europe/Paris"):
        open_store(repo, "other_zone.yaml")
