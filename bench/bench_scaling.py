"""How each pipeline step's time grows from one month (January 2013) to the full year.

One ``kfp.local`` run per window, each step its own process, throwaway registry. Figures: per step
seconds for the month and the year, and year/month. A ratio near 1 means the step's time is
fixed cost (process start, imports, graph building); the year has about 12x the month's rows.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.bench_vs_tfx import run_ours

WINDOWS = (("month", "2013-01", "2013-01"), ("year", "2013-01", "2013-12"))


def run() -> dict[str, float | str]:
    """Run the pipeline on January, then on 2013; seconds per step of each and their ratio."""
    per: dict[str, dict[str, float]] = {}
    figures: dict[str, float | str] = {}
    for label, first, last in WINDOWS:
        with tempfile.TemporaryDirectory() as tmp:
            per[label], wall = run_ours(Path(tmp), first, last)
        figures[f"pipeline_{label}_wall_s"] = round(wall, 1)
    for step, month in per["month"].items():
        year = per["year"].get(step, 0.0)
        figures[f"{step}_month_s"] = round(month, 1)
        figures[f"{step}_year_s"] = round(year, 1)
        figures[f"{step}_year_vs_month"] = round(year / month, 2) if month else "n/a"
    return figures
