"""Compile, run locally and submit the training pipeline.

The DAG itself lives in ``pipelines/training_pipeline.py`` and knows nothing of runners; this
module is where it meets ``kfp.compiler``, ``kfp.local`` and ``kfp.Client``.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from mlops.progress import FAILED, QUEUED, RUNNING, SKIPPED, SUCCEEDED, RunProgress
from mlops.report import StepRecord, build_report, read_task_outputs

COMPILED_PIPELINE = Path("pipelines/training_pipeline.yaml")
COMPILED_MONITORING = Path("pipelines/monitoring_pipeline.yaml")
# Steps of the DAG in order, as kfp names the tasks (component function names, `_` -> `-`).
STEPS = (
    "ingest-op", "validate-op", "validation-gate-op", "transform-op", "train-op", "evaluate-op",
    "push-op", "deploy-op",
)  # fmt: skip
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
LOGS_DIR = "logs"  # each step's output: <run>/logs/<step>.log
# The progress display's states as the report and summary have always spelled them.
_RECORD_STATUS = {
    QUEUED: "NOT RUN", SKIPPED: "NOT RUN", RUNNING: "RUNNING", SUCCEEDED: "SUCCESS",
    FAILED: "FAILURE",
}  # fmt: skip


def compile_pipeline(
    out: Path = COMPILED_PIPELINE, image: str | None = None, monitoring: bool = False
) -> Path:
    """Compile a pipeline to KFP IR YAML (what `kfp pipeline create` uploads).

    Args:
        out: Where to write the YAML.
        image: Component image (registry/name:tag) to run every step in, instead of the
            default of ``components/images.py``; set when images are pushed to your registry.
        monitoring: Compile the monitoring pipeline instead of the training pipeline.
    """
    import yaml
    from kfp import compiler

    from components.images import COMPONENT_IMAGE

    if monitoring:
        from pipelines.monitoring_pipeline import monitoring_pipeline as pipeline
    else:
        from pipelines.training_pipeline import training_pipeline as pipeline

    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline, str(out))
    if image and image != COMPONENT_IMAGE:
        docs = list(yaml.safe_load_all(out.read_text()))
        for executor in docs[0]["deploymentSpec"]["executors"].values():
            executor["container"]["image"] = image
        out.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return out


@dataclass
class RunSummary:
    """What a local run did and decided."""

    run_name: str
    status: str
    run_dir: Path
    report: Path
    steps: list[StepRecord]
    decisions: dict[str, Any] = field(default_factory=dict)
    failed_step: str | None = None
    failed_log: Path | None = None
    failed_tail: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable summary lines; a failure ends them with its step's last log lines."""
        out = [f"run {self.run_name}: {self.status}"]
        width = max((len(s.name) for s in self.steps), default=0)
        out += [
            f"  {s.name:<{width}} {s.status:<8} "
            + ("" if s.seconds is None else f"{s.seconds:6.1f} s")
            for s in self.steps
        ]
        out += [f"  {k}: {v}" for k, v in self.decisions.items()]
        out += [f"  outputs: {self.run_dir}", f"  report:  {self.report}"]
        if self.failed_step:
            out.append(
                f"step {self.failed_step} failed; its last {len(self.failed_tail)} log lines:"
            )
            out += [f"  | {line}" for line in self.failed_tail]
            out.append(f"  full log: {self.failed_log}")
        return out


def _decisions(steps: dict[str, StepRecord]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Pull the verdict, metrics, blessing and registry version out of the step outputs.

    Each component's result type reads its own artifact metadata back (``from_metadata``), so
    the keys are spelled once, where the component writes them.
    """
    # The app layer reads the components' result types; their core modules import no TensorFlow.
    from components.deploy.core import DeployResult
    from components.evaluate.core import BlessingMetadata
    from components.push.core import PushResult
    from components.validate.core import VerdictMetadata

    decisions: dict[str, Any] = {}
    evaluation = None
    validate = steps.get("validate-op")
    if validate and validate.outputs:
        for out in validate.outputs.values():
            verdict = VerdictMetadata.from_metadata(out.get("metadata", {}))
            if verdict is not None:
                decisions["validation"] = "passed" if verdict.ok else "FAILED"
                if not verdict.ok and verdict.summary:
                    decisions["validation report"] = verdict.summary
    ev = steps.get("evaluate-op")
    if ev and ev.outputs:
        metrics = ev.outputs.get("metrics", {}).get("metadata", {})
        for key in ("auc", "log_loss", "accuracy", "pr_auc", "f1", "operating_threshold",
                    "baseline_auc"):  # fmt: skip
            if key in metrics:
                decisions[key] = round(float(metrics[key]), 4)
        blessing = ev.outputs.get("blessing", {})
        blessed = BlessingMetadata.from_metadata(blessing.get("metadata", {}))
        if blessed is not None:
            decisions["blessed"] = blessed.blessed
            decisions["reasons"] = "\n".join(blessed.reasons)
        path = Path(blessing.get("path", ""))
        if path.is_file():
            evaluation = json.loads(path.read_text())
    deploy = steps.get("deploy-op")
    if deploy and deploy.outputs:
        done = DeployResult.from_metadata(deploy.outputs.get("decision", {}).get("metadata", {}))
        decisions["deploy"] = done.action if done else None
        decisions["deploy reasons"] = "\n".join(done.reasons) if done else None
        decisions["production version"] = done.production_version if done else None
    push = steps.get("push-op")
    if push and push.outputs:
        pushed = PushResult.from_metadata(push.outputs.get("pushed", {}).get("metadata", {}))
        decisions["pushed"] = pushed.pushed if pushed else None
        decisions["registry version"] = pushed.version if pushed else None
        decisions["push"] = pushed.reason if pushed else None
    return decisions, evaluation


def run_local(
    runs_dir: Path,
    arguments: dict[str, Any],
    run_name: str | None = None,
    *,
    verbose: bool = False,
    out: TextIO | None = None,
) -> RunSummary:
    """Run the whole DAG with ``kfp.local`` in this environment and write the run report.

    While it runs, each step's state and elapsed time are shown on ``out`` (a live table on a
    terminal, a line per state change otherwise) and each step's output goes to
    ``<run>/logs/<step>.log``. A failing step stops the run (kfp.local raises); the summary and
    report are written anyway, and the summary names the step, its last log lines and its log.

    Args:
        runs_dir: Directory of the runs; the run writes to ``runs_dir/run_name``.
        arguments: Pipeline parameters.
        run_name: Name of the run (default: ``run-<UTC time>``).
        verbose: Also echo every step's log lines to ``out``.
        out: Where progress goes (default: ``sys.stdout``).
    """
    from kfp import local

    from pipelines.training_pipeline import training_pipeline

    run_name = run_name or datetime.now(UTC).strftime("run-%Y%m%d-%H%M%S")
    # Locally there is no InferenceService: deploy runs the shadow analysis on loopback.
    arguments = {"deploy_mode": "local", **arguments}
    root = (runs_dir / run_name).resolve()
    root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    progress = RunProgress(STEPS, root / LOGS_DIR, out=out, verbose=verbose)
    status = "SUCCESS"
    t0 = time.perf_counter()
    try:
        with progress:
            training_pipeline(**arguments)
    except RuntimeError as err:  # kfp.local's pipeline failure
        status = f"FAILURE ({_ANSI.sub('', str(err))})"
    wall = time.perf_counter() - t0

    # kfp.local's directory of the run (the newest, if the name is re-used), not the step logs.
    run_dirs = sorted(p for p in root.iterdir() if p.is_dir() and p != progress.log_dir)
    kfp_dir = run_dirs[-1] if run_dirs else root
    steps: list[StepRecord] = []
    for name, seen in progress.steps.items():
        step = StepRecord(
            name, _RECORD_STATUS[seen.state], started=seen.started, finished=seen.finished
        )
        step.outputs = read_task_outputs(kfp_dir / name)
        steps.append(step)
    by_name = {s.name: s for s in steps}
    decisions, evaluation = _decisions(by_name)
    decisions["wall time"] = f"{wall:.1f} s"
    (root / "arguments.json").write_text(json.dumps(arguments, indent=2, default=str))
    report = build_report(run_name, steps, decisions, root / "report.html", evaluation)
    failed = progress.failed_step
    summary = RunSummary(
        run_name, status, kfp_dir, report, steps, decisions, failed_step=failed,
        failed_log=progress.steps[failed].log if failed else None,
        failed_tail=progress.tail(failed) if failed else [],
    )  # fmt: skip
    (root / "summary.json").write_text(
        json.dumps(
            {
                "run_name": run_name, "status": status, "decisions": decisions,
                "steps": [
                    {
                        "name": s.name, "status": s.status, "seconds": s.seconds,
                        "log": str(progress.steps[s.name].log),
                    }
                    for s in steps
                ],
            },
            indent=2, default=str,
        )
    )  # fmt: skip
    return summary
