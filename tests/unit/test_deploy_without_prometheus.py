"""Deploy with no ``prometheus`` binary: the shadow analysis is skipped, readably, never raised.

A fresh machine where ``tools/install-prometheus.sh`` could not run must still end the run with
a decision: ``skipped``, a reason saying how to install Prometheus, the candidate still
``candidate`` and ``production`` where it was. The registry and deploy core are the real ones;
only PATH lacks ``prometheus``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from components.deploy.core import deploy
from mlops.registry import CANDIDATE, PRODUCTION, Lineage, ModelRegistry
from mlops.shadow import prometheus, prometheus_available

pytestmark = pytest.mark.unit
MODEL = "flight-delay"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_prometheus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """PATH holding only directories without a ``prometheus`` binary."""
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    keep = [d for d in dirs if not (Path(d) / "prometheus").exists()]
    monkeypatch.setenv("PATH", os.pathsep.join(keep or [str(tmp_path)]))
    assert shutil.which("prometheus") is None


def two_versions(root: Path) -> ModelRegistry:
    """Version 1 in production, version 2 the pushed candidate."""
    registry = ModelRegistry(str(root / "registry"))
    for v in (1, 2):
        model = root / f"m{v}"
        model.mkdir()
        (model / "saved_model.pb").write_bytes(b"not loaded when the analysis is skipped")
        lineage = Lineage(spans=["2013-01"], blessed=True, blessing_reasons=["test"])
        registry.register(MODEL, model, lineage, {"v": v})
    registry.set_alias(MODEL, PRODUCTION, 1)
    registry.set_alias(MODEL, CANDIDATE, 2)
    return registry


def test_local_deploy_skips_the_shadow_analysis_and_says_how_to_install(
    no_prometheus: None, tmp_path: Path
) -> None:
    registry = two_versions(tmp_path)
    result = deploy(
        {"pushed": True, "version": 2},
        str(tmp_path / "registry"),
        MODEL,
        "local",
        feature_repo=tmp_path / "feature_repo",
        replay_path=tmp_path / "missing.parquet",  # never read: nothing to replay to
    )
    assert result.action == "skipped"
    assert (result.version, result.production_version) == (2, 1)
    (reason,) = result.reasons
    assert reason.startswith("shadow analysis skipped: prometheus not installed")
    assert "make prometheus" in reason and "tools/install-prometheus.sh" in reason
    assert "stays candidate" in reason
    assert registry.find(MODEL, PRODUCTION).version == 1  # type: ignore[union-attr]
    assert registry.find(MODEL, CANDIDATE).version == 2  # type: ignore[union-attr]
    events = [e["kind"] for e in registry.get(MODEL, 2).lineage.events]
    assert "shadow_skipped" in events and "shadow_started" not in events


def test_starting_prometheus_without_the_binary_names_the_fix(
    no_prometheus: None, tmp_path: Path
) -> None:
    assert not prometheus_available()
    with (
        pytest.raises(FileNotFoundError, match="make prometheus"),
        prometheus("127.0.0.1:1", tmp_path),
    ):
        pass


@pytest.mark.parametrize(("target", "ok"), [("local-tools", True), ("prometheus", False)])
def test_make_without_a_way_to_install_prometheus_says_what_to_do(
    tmp_path: Path, target: str, ok: bool
) -> None:
    """No prometheus and no apt-get: `make run`'s prerequisite warns and goes on (the run then
    skips the shadow analysis); `make prometheus` fails; both say what to install."""
    bin_dir = tmp_path / "bin"  # the tools make and the script use, and nothing else
    bin_dir.mkdir()
    for tool in ("bash", "make", "id", "env", "cat"):
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    proc = subprocess.run(
        [str(bin_dir / "make"), "--no-print-directory", target],
        cwd=ROOT, env={"PATH": str(bin_dir)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (proc.returncode == 0) is ok, proc.stdout + proc.stderr
    assert "no apt-get on this machine" in proc.stderr
    assert "prometheus-pushgateway" in proc.stderr and "make prometheus" in proc.stderr
    if ok:
        assert "later runs skip the shadow analysis and keep their candidate" in proc.stderr
