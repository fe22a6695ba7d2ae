"""Benchmark of Feast's two offline stores on the training-set join: DuckDB and Spark (local[*]).

The two configurations of the same feature repo (``feature_store.yaml``,
``feature_store.spark.yaml``) join the feature service onto the same entity rows, January's
flights and the whole year's, in one run. Figures per store and window: seconds and rows, the
ratio spark/duckdb of seconds (above 1: Spark is slower), and whether the two training sets are
equal row for row.

Spark gets the year as twelve monthly joins, one per span, which is how a span-partitioned job
would run it: Feast's Spark SQL joins every entity row with every source row of the same key
before the time filter (Spark has no range join), so the cost of one join grows with the square
of its window on keys as coarse as three origin airports. DuckDB runs the year both as one join,
as ingest does, and as the same twelve monthly joins, so the year's ratio compares like with like.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from components.ingest.core import SpanWindow, load_entities
from mlops import features as F
from mlops.feast_ops import SPARK_YAML, apply, historical_features

REPO = Path("feature_repo")
KEYS = [F.FLIGHT_ID, F.EVENT_TIMESTAMP]


def _copy_repo(dst: Path) -> Path:
    """The feature repo's definitions, configurations and prepared data, without its registries."""
    for name in ("definitions.py", "feature_store.yaml", SPARK_YAML):
        shutil.copy(REPO / name, dst / name)
    (dst / "data").mkdir()
    for path in (REPO / "data").glob("*.parquet"):
        shutil.copy(path, dst / "data" / path.name)
    return dst


def _join(
    repo: Path, entities: list[pd.DataFrame], fs_yaml: str | None
) -> tuple[pd.DataFrame, float]:
    t0 = time.perf_counter()
    parts = [historical_features(repo, e, fs_yaml) for e in entities]
    seconds = time.perf_counter() - t0
    joined = pd.concat(parts, ignore_index=True)
    return joined.sort_values(KEYS).reset_index(drop=True), seconds


def _equal(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    try:
        pd.testing.assert_frame_equal(a, b[a.columns], check_exact=True)
    except AssertionError:
        return False
    return True


def run() -> dict[str, float | str | bool]:
    """Time both stores on January and on the full year."""
    from pyspark.sql import SparkSession

    figures: dict[str, float | str | bool] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = _copy_repo(Path(tmp))
        apply(repo)
        apply(repo, SPARK_YAML)
        year = load_entities(repo / "data", SpanWindow("2013-01", "2013-12"))
        months = [g.reset_index(drop=True) for _, g in year.groupby(F.SPAN, sort=True)]
        # Spark's session start (JVM, ~10 s) is paid once per process: keep it out of the joins.
        t0 = time.perf_counter()
        historical_features(repo, months[0].head(10), SPARK_YAML)
        figures["spark_session_start_seconds"] = round(time.perf_counter() - t0, 1)
        runs = {
            "month": {"duckdb": [months[0]], "spark": [months[0]]},
            "year": {"duckdb": [year], "duckdb_monthly": months, "spark": months},
        }
        for window, stores in runs.items():
            frames = {}
            for store, entities in stores.items():
                fs_yaml = SPARK_YAML if store == "spark" else None
                frames[store], seconds = _join(repo, entities, fs_yaml)
                figures[f"{window}_{store}_seconds"] = round(seconds, 2)
                figures[f"{window}_{store}_rows"] = len(frames[store])
                # A Spark year takes many minutes here: say where the run is.
                print(
                    f"   {window} {store}: {len(frames[store])} rows, {seconds:.1f} s", flush=True
                )
            like = "duckdb_monthly" if window == "year" else "duckdb"
            figures[f"{window}_ratio_spark_vs_duckdb"] = round(
                float(figures[f"{window}_spark_seconds"])
                / float(figures[f"{window}_{like}_seconds"]),
                2,
            )
            figures[f"{window}_spark_equals_duckdb"] = _equal(frames["duckdb"], frames["spark"])
        session = SparkSession.getActiveSession()
        if session is not None:
            session.stop()
    figures["year_ratio_spark_monthly_vs_duckdb_one_join"] = round(
        float(figures["year_spark_seconds"]) / float(figures["year_duckdb_seconds"]), 2
    )
    return figures
