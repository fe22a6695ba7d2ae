"""Benchmark of TFDV statistics and TFT on Beam: in process vs the DirectRunner's multi_processing.

Figures: seconds of ``stats_from_parquet_beam`` (TFDV ``GenerateStatistics`` over train + eval)
and of ``transform`` (TFT analyze-and-transform of train and eval, examples written) for
Jan-Mar 2013 and for the full year, once in the DirectRunner's own process and once with
``multi_processing:2`` (two local worker processes), in the same run because this machine is
shared. The DaskRunner is not timed: the platform refuses it for both steps (see
components/beam_options.py); its figure is the refusal's reason.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from components.beam_options import mode_args
from components.ingest.core import SpanWindow, ingest

REPO = Path("feature_repo")
WINDOWS = (("q1", SpanWindow("2013-01", "2013-03")), ("year", SpanWindow("2013-01", "2013-12")))
MODES = ("in_process", "multi_processing:2")


def measure(label: str, train: Path, evaluation: Path, work: Path) -> dict[str, float | str]:
    """Seconds of statistics and transform of one span in each mode."""
    import pyarrow.parquet as pq

    from components.transform.core import transform
    from components.validate.beam_stats import stats_from_parquet_beam

    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in (train, evaluation))
    figures: dict[str, float | str] = {f"beam_{label}_rows": rows}
    for mode in MODES:
        key = mode.replace(":", "")
        args = mode_args(mode)
        t0 = time.perf_counter()
        stats_from_parquet_beam([train, evaluation], args, work / f"stats-{key}")
        figures[f"tfdv_stats_{label}_{key}_seconds"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        transform(train, evaluation, work / f"graph-{key}", work / f"xf-{key}", args)
        figures[f"tft_{label}_{key}_seconds"] = round(time.perf_counter() - t0, 1)
    return figures


def run() -> dict[str, float | str]:
    """Time statistics and transform for Jan-Mar and for the full year, in each mode."""
    figures: dict[str, float | str] = {}
    try:
        mode_args("dask:tcp://127.0.0.1:8786")
    except ValueError as refused:
        figures["dask_2_workers"] = f"not run: {refused}"
    with tempfile.TemporaryDirectory() as tmp:
        for label, window in WINDOWS:
            work = Path(tmp) / label
            train, evaluation = work / "train.parquet", work / "eval.parquet"
            ingest(REPO, window, train, evaluation)
            figures.update(measure(label, train, evaluation, work))
    return figures
