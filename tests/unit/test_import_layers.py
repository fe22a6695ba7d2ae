"""The import layers of pyproject.toml hold: the real ``lint-imports`` passes on the tree.

CI runs ``make test`` only, so the contract that ``make lint`` checks is checked here too. A
second test keeps the contract honest: every ``mlops`` module sits in exactly one layer, so a new
module cannot escape the check by not being named.
"""

from __future__ import annotations

import pkgutil
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import mlops

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return list(contract["layers"])


def test_lint_imports_passes() -> None:
    proc = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "0 broken" in proc.stdout


def test_every_mlops_module_is_in_one_layer() -> None:
    named = [m for layer in _layers() for m in re.split(r"\s*[:|]\s*", layer.strip())]
    in_mlops = [m for m in named if m.startswith("mlops.")]
    assert len(in_mlops) == len(set(in_mlops)), "an mlops module is named in two layers"
    modules = {f"mlops.{m.name}" for m in pkgutil.iter_modules(mlops.__path__)}
    assert set(in_mlops) == modules, (
        f"not in a layer: {sorted(modules - set(in_mlops))}; "
        f"named but absent: {sorted(set(in_mlops) - modules)}"
    )
