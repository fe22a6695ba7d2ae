"""Evaluate and push on real SavedModels and the real January 2013 eval split.

The models are the hand-weighted logistic SavedModels of ``tests/model_fixtures.py``; TensorFlow
work is grouped in this module behind module-scoped fixtures (one export per model).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from model_fixtures import export_logistic_model  # tests/ is on sys.path via its conftest

from components.evaluate.core import EvalConfig, read_blessing, run_evaluation, score
from components.push.core import push
from mlops import features as F
from mlops.registry import CANDIDATE, PRODUCTION, ModelRegistry

pytestmark = pytest.mark.integration

MODEL = "flight-delay"
# EV is the third-largest carrier in the January eval split (~840 flights).
WORSE_CARRIER = "EV"
VALID = {"ok": True, "anomalies": []}


@pytest.fixture(scope="module")
def eval_df(training_set: Callable[[str, str], tuple[pd.DataFrame, pd.DataFrame]]) -> pd.DataFrame:
    return training_set("2013-01", "2013-01")[1]


@pytest.fixture(scope="module")
def eval_path(eval_df: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("eval") / "eval.parquet"
    eval_df.to_parquet(path, index=False)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "good": export_logistic_model(root / "good"),
        # Every EV flight gets +2 logits: EV's ranking is intact but its probabilities are far
        # too high, and EV's flights crowd the top of the mixed slices.
        "worse": export_logistic_model(root / "worse", carrier_bonus={WORSE_CARRIER: 2.0}),
    }


def evaluate_into(
    out: Path, eval_path: Path, model_dir: Path, registry_uri: str
) -> tuple[dict, str]:
    result = run_evaluation(
        eval_path, model_dir, registry_uri, MODEL, EvalConfig(), out / "report.html",
        out / "blessing.json",
    )  # fmt: skip
    blessing = read_blessing(out / "blessing.json")
    assert blessing["blessed"] == result.blessed
    return blessing, (out / "report.html").read_text()


def test_score_follows_the_contract_with_missing_values(
    eval_df: pd.DataFrame, models: dict[str, Path]
) -> None:
    rows = eval_df.head(300).copy()
    rows.loc[rows.index[:100], "carrier_delay_rate_7d"] = np.nan
    rows.loc[rows.index[100:150], "plane_manufacturer"] = None
    rows.loc[rows.index[150:200], "temp"] = np.nan
    got = score(models["worse"], rows, batch_size=64)  # several batches, one partial

    # The fixture's formula by hand: missing delay rate counts as 0.2.
    rate = rows["carrier_delay_rate_7d"].fillna(0.2).to_numpy()
    bonus = np.where(rows[F.CARRIER] == WORSE_CARRIER, 2.0, 0.0)
    logit = -3.0 + 0.12 * rows["sched_dep_hour"].to_numpy() + 4.0 * rate + bonus
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-logit)), rtol=1e-5)


def test_first_model_blessed_on_absolute_thresholds(
    eval_path: Path, models: dict[str, Path], tmp_path: Path
) -> None:
    registry_uri = str(tmp_path / "registry")
    blessing, report = evaluate_into(tmp_path, eval_path, models["good"], registry_uri)

    assert blessing["blessed"], blessing["reasons"]
    assert blessing["baseline_version"] is None
    assert blessing["overall"]["auc"] > 0.6 and blessing["overall"]["log_loss"] < 0.69
    assert any("first model" in r for r in blessing["reasons"])
    keys = {s["key"] for s in blessing["slices"]}
    assert keys == set(F.SLICE_KEYS)
    bands = {s["value"] for s in blessing["slices"] if s["key"] == "sched_hour_band"}
    assert bands <= {"night", "morning", "afternoon", "evening"} and len(bands) >= 3
    assert "BLESSED" in report and report.count("<svg") == 3


def test_worse_candidate_not_blessed_and_production_kept(
    eval_path: Path, models: dict[str, Path], tmp_path: Path
) -> None:
    registry_uri = str(tmp_path / "registry")
    registry = ModelRegistry(registry_uri)
    first, _ = evaluate_into(tmp_path / "v1", eval_path, models["good"], registry_uri)
    pushed = push(registry_uri, MODEL, models["good"], first, VALID, ["2013-01"], "t", "e")
    assert pushed.pushed and registry.aliases(MODEL) == {CANDIDATE: 1, PRODUCTION: 1}

    blessing, report = evaluate_into(tmp_path / "v2", eval_path, models["worse"], registry_uri)

    assert not blessing["blessed"]
    assert blessing["baseline_version"] == 1
    assert f"carrier={WORSE_CARRIER}" in blessing["regressed_slices"]
    failed = [r for r in blessing["reasons"] if r.startswith("FAIL")]
    assert any(f"slice carrier={WORSE_CARRIER}" in r for r in failed), failed
    # Carriers the candidate did not touch keep their AUC: it ranks their flights as before.
    untouched = [s for s in blessing["slices"] if s["key"] == F.CARRIER and s["gating"]
                 and s["value"] != WORSE_CARRIER]  # fmt: skip
    assert untouched and all(abs(s["auc_delta"]) < 1e-6 for s in untouched)
    assert all(not s["regressed"] for s in untouched)
    assert "NOT BLESSED" in report and f"carrier={WORSE_CARRIER}" in report

    result = push(registry_uri, MODEL, models["worse"], blessing, VALID, ["2013-01"], "t", "e")
    assert not result.pushed and f"carrier={WORSE_CARRIER}" in result.reason
    assert registry.aliases(MODEL) == {CANDIDATE: 1, PRODUCTION: 1}
    assert [v.version for v in registry.versions(MODEL)] == [1]


def test_equal_candidate_blessed_against_production_in_remote_registry(
    eval_path: Path, models: dict[str, Path], tmp_path: Path
) -> None:
    registry_uri = f"memory://registry-{uuid.uuid4().hex}"
    registry = ModelRegistry(registry_uri)
    first, _ = evaluate_into(tmp_path / "v1", eval_path, models["good"], registry_uri)
    assert push(registry_uri, MODEL, models["good"], first, VALID, ["2013-01"], "t", "e").pushed

    # The baseline is downloaded from the memory:// registry and scored on the same rows.
    blessing, _ = evaluate_into(tmp_path / "v2", eval_path, models["good"], registry_uri)
    assert blessing["blessed"], blessing["reasons"]
    assert blessing["baseline_version"] == 1
    assert math.isclose(blessing["overall"]["auc"], blessing["baseline_overall"]["auc"])
    result = push(registry_uri, MODEL, models["good"], blessing, VALID, ["2013-01"], "t", "e")
    assert result.pushed and result.version == 2
    assert registry.resolve(MODEL, PRODUCTION).version == 2
    lineage = registry.lineage(MODEL, 2)
    assert lineage.baseline_version == 1 and lineage.metrics["auc"] == blessing["overall"]["auc"]
    stored = registry.evaluation(MODEL, 2)
    assert stored == blessing


def test_operating_thresholds_come_from_model_metadata_and_the_baseline_record(
    eval_path: Path, eval_df: pd.DataFrame, models: dict[str, Path], tmp_path: Path
) -> None:
    registry_uri = str(tmp_path / "registry")
    y = eval_df[F.LABEL].to_numpy(dtype=float)
    scores = score(models["good"], eval_df)
    first = run_evaluation(
        eval_path, models["good"], registry_uri, MODEL, EvalConfig(), tmp_path / "v1.html",
        tmp_path / "v1.json", model_metadata={"operating_threshold": 0.3, "eval_auc": 0.7},
    )  # fmt: skip
    assert first.threshold.value == 0.3 and first.threshold.source == "model metadata"
    assert first.overall.recall == float(((scores >= 0.3) & (y == 1)).sum() / y.sum())
    pushed = push(registry_uri, MODEL, models["good"], read_blessing(tmp_path / "v1.json"), VALID,
                  ["2013-01"], "t", "e")  # fmt: skip
    assert pushed.pushed

    # A model without the metadata falls back to the parameter; the baseline (version 1) is
    # measured at the threshold its stored evaluation records, not at the candidate's.
    second = run_evaluation(
        eval_path, models["good"], registry_uri, MODEL, EvalConfig(threshold=0.45),
        tmp_path / "v2.html", tmp_path / "v2.json", model_metadata={},
    )  # fmt: skip
    assert second.threshold.value == 0.45
    assert second.threshold.source == "decision_threshold parameter"
    assert second.baseline_threshold is not None and second.baseline_threshold.value == 0.3
    assert second.baseline_threshold.source == "registry evaluation of version 1"
    assert second.baseline_overall is not None
    assert second.baseline_overall.recall == first.overall.recall
    assert second.overall.auc == second.baseline_overall.auc and second.blessed
    assert "operating threshold 0.4500 (decision_threshold parameter)" in "\n".join(second.reasons)
