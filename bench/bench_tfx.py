"""Benchmark of TFDV statistics and the TFT transform on one month and on the full year.

Figures: rows/s (and seconds) of ``stats_from_dataframe`` (TFDV, in memory) and of
``transform`` (TFT analyze-and-transform of train and eval on Beam's DirectRunner, examples
written), for January and for 2013. Baselines measured in the same run, because this machine is
shared: ``pandas.DataFrame.describe`` over the same columns for the statistics, and a plain
pandas z-score + category-code pass for the transform (same arithmetic, no Beam, no graph, no
files). The month-vs-year ratio shows how much of the transform's cost is fixed (graph tracing,
pipeline start-up) rather than per row.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pandas as pd

from components.ingest.core import SpanWindow, ingest
from mlops import features as F

REPO = Path("feature_repo")
WINDOWS = (("month", SpanWindow("2013-01", "2013-01")), ("year", SpanWindow("2013-01", "2013-12")))


def _pandas_stats_baseline(df: pd.DataFrame) -> float:
    t0 = time.perf_counter()
    df[list(F.NUMERIC_FEATURES)].describe()
    for name in F.CATEGORICAL_FEATURES:
        df[name].value_counts(dropna=False)
    return time.perf_counter() - t0


def _pandas_transform_baseline(train: pd.DataFrame, evaluation: pd.DataFrame) -> float:
    t0 = time.perf_counter()
    num = list(F.NUMERIC_FEATURES)
    mean, std = train[num].mean(), train[num].std().replace(0.0, 1.0)
    for df in (train, evaluation):
        ((df[num].fillna(mean) - mean) / std).astype("float32")
        for name in F.CATEGORICAL_FEATURES:
            vocab = train[name].value_counts().index
            _ = pd.Categorical(df[name], categories=vocab).codes
    return time.perf_counter() - t0


def _first_file(repo: Path) -> Path:
    """Any parquet file of the prepared repository (for the warm-up call)."""
    return next(iter(sorted((repo / "data").rglob("*.parquet"))))


def run() -> dict[str, float | str]:
    """Time statistics and transform for January and for the full year."""
    from components.transform.core import transform
    from components.validate.core import stats_from_dataframe

    figures: dict[str, float | str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # The first TFDV call pays TF/TFDV imports and Beam start-up (~10 s here); time it
        # apart so the month's rows/s measures the statistics, not the warm-up.
        t0 = time.perf_counter()
        stats_from_dataframe(pd.read_parquet(_first_file(REPO)).head(1000))
        figures["tfdv_stats_warmup_seconds"] = round(time.perf_counter() - t0, 2)
        for label, window in WINDOWS:
            work = Path(tmp) / label
            train_path, eval_path = work / "train.parquet", work / "eval.parquet"
            ingest(REPO, window, train_path, eval_path)
            train, evaluation = pd.read_parquet(train_path), pd.read_parquet(eval_path)
            span = pd.concat([train, evaluation], ignore_index=True)
            rows = len(span)
            figures[f"tfx_{label}_rows"] = rows

            t0 = time.perf_counter()
            stats_from_dataframe(span)
            seconds = time.perf_counter() - t0
            base = _pandas_stats_baseline(span)
            figures[f"tfdv_stats_{label}_seconds"] = round(seconds, 2)
            figures[f"tfdv_stats_{label}_rows_per_s"] = round(rows / seconds, 1)
            figures[f"tfdv_stats_{label}_pandas_describe_rows_per_s"] = round(rows / base, 1)

            t0 = time.perf_counter()
            transform(train_path, eval_path, work / "xf" / "graph", work / "xf" / "examples")
            seconds = time.perf_counter() - t0
            base = _pandas_transform_baseline(train, evaluation)
            figures[f"tft_transform_{label}_seconds"] = round(seconds, 2)
            figures[f"tft_transform_{label}_rows_per_s"] = round(rows / seconds, 1)
            figures[f"tft_transform_{label}_pandas_rows_per_s"] = round(rows / base, 1)
    for kind in ("tfdv_stats", "tft_transform"):
        figures[f"{kind}_year_vs_month_rows_per_s_ratio"] = round(
            float(figures[f"{kind}_year_rows_per_s"]) / float(figures[f"{kind}_month_rows_per_s"]),
            3,
        )
    figures["tft_runner"] = "DirectRunner (in-process)"
    return figures
