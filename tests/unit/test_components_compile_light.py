"""Each component module compiles without importing TensorFlow, TFDV or TFT.

Heavy imports belong inside the component bodies (they run in the container); importing a
component module, which builds its spec, and compiling it must stay fast. Each module is checked
in a fresh interpreter, so one module's imports cannot hide another's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("tensorflow", "tensorflow_data_validation", "tensorflow_transform")
COMPONENTS = {
    "components.ingest.component": "ingest_op",
    "components.validate.component": "validate_op",
    "components.gate.component": "validation_gate_op",
    "components.transform.component": "transform_op",
    "components.train.component": "train_op",
    "components.evaluate.component": "evaluate_op",
    "components.push.component": "push_op",
    "components.deploy.component": "deploy_op",
    "components.monitor.component": "monitor_op",
}
PIPELINES = {
    "pipelines.training_pipeline": "training_pipeline",
    "pipelines.monitoring_pipeline": "monitoring_pipeline",
}

PROBE = """
import importlib, json, sys
from kfp import compiler
module, name, out = sys.argv[1:4]
compiler.Compiler().compile(getattr(importlib.import_module(module), name), out)
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def _heavy_after_compiling(module: str, name: str, out: Path) -> list[str]:
    probe = PROBE.format(heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", probe, module, name, str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.is_file()
    heavy: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return heavy


@pytest.mark.parametrize(("module", "name"), sorted({**COMPONENTS, **PIPELINES}.items()))
def test_compiles_without_heavy_imports(module: str, name: str, tmp_path: Path) -> None:
    assert _heavy_after_compiling(module, name, tmp_path / "spec.yaml") == []


def test_every_component_is_checked() -> None:
    found = {
        f"components.{p.parent.name}.component"
        for p in (ROOT / "components").glob("*/component.py")
    }
    assert found == set(COMPONENTS)
