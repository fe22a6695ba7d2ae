"""Two training workers on loopback, with the TF_CONFIG a TFJob sets, match one worker.

``run_local_workers`` starts two ``components.train.workers`` processes whose ``TF_CONFIG`` names
both on 127.0.0.1: MultiWorkerMirroredStrategy's collective ops run over gRPC between them, as
between a TFJob's pods. Each worker reads its half of every global batch (``batch_size`` per
worker); the single-worker run trains the same data with the same global batch. The exported
models' AUC on held-out eval rows (not the validation rows early stopping saw) must agree within
0.005, and only the chief may have written the model, the logs and the result.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops import features as F
from tests.conftest import TrainingSet

pytestmark = pytest.mark.integration

# Enough epochs for early stopping and the keep-the-warm-start choice to act (it stops at ~6).
HP = {"epochs": 10, "batch_size": 256, "hidden_units": [16]}
WORKERS = 2


@pytest.fixture(scope="module")
def transformed_split(training_set: TrainingSet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Transformed train/validation examples, plus held-out eval rows (``eval.parquet``)."""
    from components.transform.core import transform

    train, held_out = training_set("2013-01", "2013-01")
    out = tmp_path_factory.mktemp("mw-xf")
    train.head(3000).to_parquet(out / "train.parquet", index=False)
    held_out.head(1000).to_parquet(out / "validation.parquet", index=False)
    held_out.iloc[1000:].to_parquet(out / "eval.parquet", index=False)
    transform(out / "train.parquet", out / "validation.parquet", out / "graph", out / "examples")
    return out


def _eval_auc(model_dir: Path, xf: Path) -> float:
    import pandas as pd

    from components.evaluate.core import score
    from components.evaluate.metrics import auc

    rows = pd.read_parquet(xf / "eval.parquet")
    return auc(rows[F.LABEL].to_numpy(), score(model_dir, rows))


def test_two_workers_match_one_worker_on_eval_auc(transformed_split: Path, tmp_path: Path) -> None:
    from components.train.core import HyperParameters, train
    from components.train.workers import RESULT_FILE, run_local_workers

    xf = transformed_split
    multi = run_local_workers(
        WORKERS, xf / "graph", xf / "examples", tmp_path / "mw" / "model", tmp_path / "mw" / "logs",
        json.dumps(HP), tmp_path / "mw" / "work", timeout_s=600,
    )  # fmt: skip
    single = train(
        xf / "graph", xf / "examples", tmp_path / "one" / "model", tmp_path / "one" / "logs",
        HyperParameters.from_json(json.dumps({**HP, "batch_size": HP["batch_size"] * WORKERS})),
    )  # fmt: skip
    assert multi.workers == WORKERS and single.workers == 1
    assert multi.train_examples == single.train_examples == 3000
    assert multi.epochs_run == single.epochs_run
    assert multi.validation_auc > 0.7
    assert abs(multi.validation_auc - single.validation_auc) <= 0.005
    multi_auc = _eval_auc(tmp_path / "mw" / "model", xf)
    single_auc = _eval_auc(tmp_path / "one" / "model", xf)
    # Measured here: 0.5820 vs 0.5826 (late January's eval rows are hard for 3,000 early rows).
    assert multi_auc > 0.55
    assert abs(multi_auc - single_auc) <= 0.005, (multi_auc, single_auc)
    # Only the chief kept its outputs: one model, one result, logs where the chief wrote them.
    assert (tmp_path / "mw" / "model" / "saved_model.pb").is_file()
    assert (tmp_path / "mw" / "work" / RESULT_FILE).is_file()
    assert any((tmp_path / "mw" / "logs").rglob("events.out.tfevents.*"))
    logs = [(tmp_path / "mw" / "work" / f"worker-{i}.log").read_text() for i in range(WORKERS)]
    assert all("Coordination agent has successfully connected" in log for log in logs)


def test_a_failing_worker_stops_the_job_with_its_log(
    transformed_split: Path, tmp_path: Path
) -> None:
    from components.train.workers import WorkerError, run_local_workers

    with pytest.raises(
        WorkerError, match=r"worker \d exited with 1:[\s\S]*unknown hyperparameters"
    ):
        run_local_workers(WORKERS, transformed_split / "graph", transformed_split / "examples",
                          tmp_path / "model", tmp_path / "logs", '{"epochz": 1}',
                          tmp_path / "work", timeout_s=120)  # fmt: skip
    assert not (tmp_path / "model").exists()
