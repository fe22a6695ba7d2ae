"""Benchmark of the training-set build (Feast point-in-time join + time split).

Figures: rows/s for one month and for the full year, and their ratio, so later work can see how
cost grows with data. The baseline measured in the same run is a plain pandas ``merge_asof`` of
the same sources (no Feast, no TTL handling): the ratio says what Feast's join costs over it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pandas as pd

from components.ingest.core import SpanWindow, ingest
from mlops import features as F

REPO = Path("feature_repo")


def _asof_baseline(window: SpanWindow) -> tuple[int, float]:
    data = REPO / "data"
    flights = pd.read_parquet(data / "flights.parquet")
    spans = window.select(sorted(flights[F.SPAN].unique()))
    t0 = time.perf_counter()
    rows = flights[flights[F.SPAN].isin(spans)].sort_values(F.EVENT_TIMESTAMP)
    for name, key in (("weather", F.ORIGIN), ("carrier_stats", F.CARRIER)):
        src = pd.read_parquet(data / f"{name}.parquet").sort_values(F.EVENT_TIMESTAMP)
        rows = pd.merge_asof(rows, src, on=F.EVENT_TIMESTAMP, by=key, direction="backward")
    planes = pd.read_parquet(data / "planes.parquet").drop(columns=F.EVENT_TIMESTAMP)
    rows = rows.merge(planes, on=F.TAILNUM, how="left")
    return len(rows), time.perf_counter() - t0


def run() -> dict[str, float | str]:
    """Time the training-set build for January and for the full year."""
    figures: dict[str, float | str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, window in (
            ("month", SpanWindow("2013-01", "2013-01")),
            ("year", SpanWindow("2013-01", "2013-12")),
        ):
            t0 = time.perf_counter()
            res = ingest(REPO, window, Path(tmp) / "t.parquet", Path(tmp) / "e.parquet")
            seconds = time.perf_counter() - t0
            rows = res.train_rows + res.eval_rows
            base_rows, base_seconds = _asof_baseline(window)
            figures[f"ingest_{label}_rows"] = rows
            figures[f"ingest_{label}_seconds"] = round(seconds, 2)
            figures[f"ingest_{label}_rows_per_s"] = round(rows / seconds, 1)
            figures[f"ingest_{label}_pandas_asof_rows_per_s"] = round(base_rows / base_seconds, 1)
            figures[f"ingest_{label}_ratio_vs_pandas_asof"] = round(
                (rows / seconds) / (base_rows / base_seconds), 3
            )
    figures["ingest_year_vs_month_rows_per_s_ratio"] = round(
        float(figures["ingest_year_rows_per_s"]) / float(figures["ingest_month_rows_per_s"]), 3
    )
    return figures
