"""This pipeline against the TFX 1.16 peer on the same work, measured in the same run.

Both run January-March 2013 (the peer's window, /work/shared/peers/tfx/): this pipeline with
``kfp.local`` (each step its own process, as in a cluster each is its own pod), the peer with
TFX's LocalDagRunner. Figures: per step seconds of each, side by side, and the ratio of the
totals (this pipeline / peer; the goal is <= 0.7).

Steps are matched by the work they do: ingest = CsvExampleGen, validate = StatisticsGen +
SchemaGen + ExampleValidator, transform = Transform, train = Trainer, evaluate = Evaluator,
push = Pusher. Steps without a TFX counterpart (validation gate, deploy) are reported but left
out of the matched total.

The peer is installed by ``tools/install-tfx-peer.sh`` outside the repository. When it is not
installed, the peer's figures are the string ``"not installed"`` and no ratio is written, so a
result never carries another run's peer figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from mlops.registry import code_revision_label
from mlops.runner import run_local

REPO = Path("feature_repo").resolve()
PEER_DIR = Path(os.environ.get("TFX_PEER_DIR", "/work/shared/peers/tfx"))
PEER_VENV = Path(
    os.environ.get("TFX_PEER_VENV", Path.home() / ".cache" / "flight-delay" / "tfxvenv")
)
FIRST_SPAN, LAST_SPAN = "2013-01", "2013-03"
# Our step -> the TFX components doing the same work.
MATCH = {
    "ingest": ("ingest-op", ["CsvExampleGen"]),
    "validate": ("validate-op", ["StatisticsGen", "SchemaGen", "ExampleValidator"]),
    "transform": ("transform-op", ["Transform"]),
    "train": ("train-op", ["Trainer"]),
    "evaluate": ("evaluate-op", ["Evaluator"]),
    "push": ("push-op", ["Pusher"]),
}
PEER_TIMEOUT_S = 1800


def peer_python(venv: Path = PEER_VENV) -> Path | None:
    """The peer venv's interpreter, or None when the install did not complete."""
    python = venv / "bin" / "python"
    # tools/install-tfx-peer.sh writes .installed last: a half-done install is "not installed".
    return python if python.exists() and (venv / ".installed").is_file() else None


def run_peer(python: Path, work: Path, peer_dir: Path = PEER_DIR) -> dict[str, Any]:
    """Run the TFX peer once in ``work``; its JSON line (total and per component seconds).

    Raises:
        RuntimeError: The peer's pipeline failed (its stderr's end is in the message).
    """
    data = work / "data"
    data.mkdir(parents=True)
    subprocess.run([str(python), str(peer_dir / "prepare_data.py"), str(data / "flights.csv")],
                   check=True, capture_output=True, cwd=work, timeout=600)  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run([str(python), str(peer_dir / "pipeline.py"), str(data), str(work)],
                          capture_output=True, text=True, cwd=work,
                          timeout=PEER_TIMEOUT_S)  # fmt: skip
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"TFX peer failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = round(wall, 1)
    return result


def run_ours(
    work: Path, first_span: str = FIRST_SPAN, last_span: str = LAST_SPAN
) -> tuple[dict[str, float], float]:
    """Run this pipeline on a window (the peer's by default); (seconds per step, wall seconds)."""
    t0 = time.perf_counter()
    summary = run_local(work / "runs", {
        "feature_repo": str(REPO), "first_span": first_span, "last_span": last_span,
        "registry_uri": str(work / "registry"), "code_revision": code_revision_label(),
    }, "bench-vs-tfx")  # fmt: skip
    wall = time.perf_counter() - t0
    if summary.status != "SUCCESS":
        raise RuntimeError(f"pipeline run failed: {summary.status}")
    return {s.name: float(s.seconds or 0.0) for s in summary.steps}, wall


def side_by_side(ours: dict[str, float], peer: dict[str, float] | None) -> dict[str, float | str]:
    """Figures per matched step, the matched totals and their ratio (ours / peer)."""
    figures: dict[str, float | str] = {}
    ours_total = peer_total = 0.0
    for step, (op, components) in MATCH.items():
        mine = ours.get(op, 0.0)
        ours_total += mine
        figures[f"{step}_ours_s"] = round(mine, 1)
        if peer is None:
            figures[f"{step}_tfx_s"] = "not installed"
            continue
        theirs = sum(float(peer.get(c, 0.0)) for c in components)
        peer_total += theirs
        figures[f"{step}_tfx_s"] = round(theirs, 1)
        figures[f"{step}_ratio"] = round(mine / theirs, 3) if theirs else "no peer time"
    figures["matched_steps_ours_s"] = round(ours_total, 1)
    if peer is None:
        figures["matched_steps_tfx_s"] = "not installed"
        figures["ratio_ours_vs_tfx"] = "not installed"
    else:
        figures["matched_steps_tfx_s"] = round(peer_total, 1)
        figures["ratio_ours_vs_tfx"] = round(ours_total / peer_total, 3) if peer_total else "n/a"
    return figures


def run() -> dict[str, float | str]:
    """This pipeline then the peer, on January-March 2013, in one run."""
    python = peer_python()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        ours, ours_wall = run_ours(Path(tmp) / "ours")
        peer = run_peer(python, Path(tmp) / "peer") if python else None
    per = {k: float(v) for k, v in peer["per_component_s"].items()} if peer else None
    figures = side_by_side(ours, per)
    figures["window"] = f"{FIRST_SPAN}..{LAST_SPAN}"
    # This machine is shared: the 1-minute load average before and after says how noisy it was.
    figures["load_avg_1m_before_after"] = f"{load_before:.1f}/{os.getloadavg()[0]:.1f}"
    figures["pipeline_wall_ours_s"] = round(ours_wall, 1)
    figures["pipeline_wall_tfx_s"] = float(peer["total_s"]) if peer else "not installed"
    # The peer times its run after its imports, in one process; ours time each step's process
    # whole (start, imports, work). The peer's process time, imports included, for comparison.
    figures["process_wall_tfx_s"] = float(peer["process_wall_s"]) if peer else "not installed"
    for op, seconds in ours.items():
        if op not in {o for o, _ in MATCH.values()}:
            figures[f"unmatched_{op}_ours_s"] = round(seconds, 1)
    return figures
