"""TFDV statistics on Beam (the scale-out path) against the in-memory path, on a real span.

The in-memory validation itself (a clean month, injected faults, seasonal drift) is tested in
``test_validate_transform.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlops import features as F

pytestmark = pytest.mark.integration

TrainingSet = Callable[[str, str], tuple[pd.DataFrame, pd.DataFrame]]


def by_name(stats: Any) -> dict[str, Any]:
    return {".".join(f.path.step): f for f in stats.datasets[0].features}


def test_beam_statistics_equal_in_memory_and_validate_the_same(
    training_set: TrainingSet, tmp_path: Path
) -> None:
    import tensorflow_data_validation as tfdv

    from components.validate.beam_stats import STATS_FILE, stats_from_parquet_beam
    from components.validate.core import load_schema, stats_from_dataframe

    train, evaluation = training_set("2013-01", "2013-01")
    paths = [tmp_path / "train.parquet", tmp_path / "eval.parquet"]
    train.to_parquet(paths[0], index=False)
    evaluation.to_parquet(paths[1], index=False)

    beam = stats_from_parquet_beam(paths, ["--direct_num_workers=1"], tmp_path / "out")
    assert (tmp_path / "out" / STATS_FILE).stat().st_size > 0
    memory = stats_from_dataframe(pd.concat([train, evaluation], ignore_index=True))
    assert (
        beam.datasets[0].num_examples
        == memory.datasets[0].num_examples
        == len(train) + len(evaluation)
    )
    b, m = by_name(beam), by_name(memory)
    assert sorted(b) == sorted(m) == sorted((*F.FEATURE_NAMES, F.LABEL))
    for name in F.NUMERIC_FEATURES:
        bs, ms = b[name].num_stats, m[name].num_stats
        assert bs.common_stats.num_missing == ms.common_stats.num_missing, name
        assert bs.mean == pytest.approx(ms.mean, rel=1e-9), name
        assert (bs.min, bs.max) == (ms.min, ms.max), name
    for name in F.CATEGORICAL_FEATURES:
        bs, ms = b[name].string_stats, m[name].string_stats
        assert bs.unique == ms.unique, name
        assert [v.value for v in bs.top_values[:5]] == [v.value for v in ms.top_values[:5]], name

    schema = load_schema()
    assert not tfdv.validate_statistics(beam, schema).anomaly_info  # a normal month is clean

    # A dropped column and an unseen category are anomalies, not read errors.
    bad = train.drop(columns=["visib"]).copy()
    bad.loc[bad.index[:300], "dest"] = "XXX"
    bad.to_parquet(tmp_path / "bad.parquet", index=False)
    bad_stats = stats_from_parquet_beam([tmp_path / "bad.parquet"])
    info = tfdv.validate_statistics(bad_stats, schema).anomaly_info
    assert {"visib", "dest"} <= set(info), dict(info)
    assert "XXX" in info["dest"].description
