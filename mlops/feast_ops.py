"""Feast operations used by the CLI and the tests: apply, materialize, online read."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from mlops import features as F
from mlops.data import DataError, is_prepared


def _store(repo_path: Path) -> Any:
    from feast import FeatureStore  # heavy import kept out of module import

    if not (repo_path / "feature_store.yaml").is_file():
        raise DataError(f"no Feast repository at {repo_path} (feature_store.yaml missing)")
    return FeatureStore(repo_path=str(repo_path))


def apply(repo_path: Path) -> list[str]:
    """Register the repository's definitions, as ``feast apply`` does; return the view names."""
    if not is_prepared(repo_path / "data"):
        raise DataError(f"{repo_path / 'data'} has no prepared sources; run `mlops prepare`")
    # The real `feast apply` CLI of this environment, run in the repo as a user would run it.
    feast = Path(sys.executable).with_name("feast")
    proc = subprocess.run(
        [str(feast), "apply"], cwd=repo_path, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise DataError(f"feast apply failed in {repo_path}:\n{proc.stderr[-2000:]}")
    return sorted(v.name for v in _store(repo_path).list_feature_views())


def materialize(repo_path: Path, start: datetime, end: datetime) -> None:
    """Load the newest feature values in ``[start, end]`` into the online store."""
    _store(repo_path).materialize(start_date=start, end_date=end)


def online_features(repo_path: Path, entity_rows: list[dict[str, str]]) -> pd.DataFrame:
    """Read the feature service's features for ``entity_rows`` from the online store."""
    store = _store(repo_path)
    service = store.get_feature_service(F.FEATURE_SERVICE)
    return store.get_online_features(features=service, entity_rows=entity_rows).to_df()
