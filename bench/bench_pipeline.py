"""Benchmark of a full local pipeline run: wall time per step, the share spent importing
libraries, and the trainer's figures (examples/s on this machine's CPU, AUC vs the baselines).

The import share is estimated: each step's heavy top-level imports are timed in a fresh
interpreter of the same environment (the baseline measured in this run), and divided by the
step's wall time. Later work compares these figures with TFX on the same data.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlops.registry import code_revision_label
from mlops.runner import run_local

REPO = Path("feature_repo").resolve()
# What each step imports (the kfp executor itself imports kfp.dsl, not the kfp client).
STEP_IMPORTS = {
    "ingest-op": ["kfp.dsl", "feast", "pandas"],
    "validate-op": ["kfp.dsl", "tensorflow_data_validation"],
    "validation-gate-op": ["kfp.dsl"],
    "transform-op": ["kfp.dsl", "tensorflow_transform", "apache_beam"],
    "train-op": ["kfp.dsl", "tensorflow_transform", "tensorflow"],
    "evaluate-op": ["kfp.dsl", "tensorflow"],
    "push-op": ["kfp.dsl", "fsspec"],
    "deploy-op": ["kfp.dsl", "fsspec"],
}


def import_seconds(modules: list[str]) -> float:
    """Seconds a fresh interpreter of this environment takes to import ``modules``."""
    code = "import time; t = time.perf_counter(); " + "; ".join(
        f"import {m}" for m in modules
    ) + "; print(time.perf_counter() - t)"  # fmt: skip
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                         text=True, check=True)  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def run() -> dict[str, float | str]:
    """One local run on January-February 2013 with a throwaway registry."""
    figures: dict[str, float | str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = run_local(Path(tmp) / "runs", {
            "feature_repo": str(REPO), "first_span": "2013-01", "last_span": "2013-02",
            "registry_uri": str(Path(tmp) / "registry"), "code_revision": code_revision_label(),
        }, "bench")  # fmt: skip
        wall = time.perf_counter() - t0
        if summary.status != "SUCCESS":
            raise RuntimeError(f"benchmark run failed: {summary.status}")
        train_out = next(s for s in summary.steps if s.name == "train-op").outputs
        trained = json.loads(train_out["Output"]["value"])
    figures["pipeline_wall_s"] = round(wall, 1)
    imports = {}
    total_import = 0.0
    for step in summary.steps:
        seconds = step.seconds or 0.0
        imp = import_seconds(STEP_IMPORTS.get(step.name, ["kfp.dsl"]))
        imports[step.name] = imp
        total_import += imp
        figures[f"step_{step.name}_s"] = round(seconds, 1)
        figures[f"step_{step.name}_import_share"] = round(imp / seconds, 3) if seconds else 0.0
    steps_total = sum(s.seconds or 0.0 for s in summary.steps)
    figures["steps_total_s"] = round(steps_total, 1)
    figures["import_share_of_steps"] = round(total_import / steps_total, 3)
    figures["train_examples_per_s_cpu"] = trained["examples_per_second"]
    figures["train_rows"] = trained["train_examples"]
    figures["train_epochs_run"] = trained["epochs_run"]
    # Train measures on the validation split only; bench_quality has the eval-split figures.
    figures["model_validation_auc"] = trained["validation_auc"]
    figures["logistic_baseline_validation_auc"] = trained["logistic_validation_auc"]
    figures["model_vs_logistic_auc_ratio"] = round(
        trained["validation_auc"] / trained["logistic_validation_auc"], 4
    )
    figures["model_validation_accuracy"] = trained["validation_accuracy"]
    figures["majority_class_validation_accuracy"] = trained["majority_validation_accuracy"]
    figures["operating_threshold"] = trained["operating_threshold"]
    figures["train_devices"] = ",".join(trained["devices"])
    return figures
