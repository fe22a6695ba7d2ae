"""Security scan of the rendered Kubernetes packaging with checkov.

Renders every configuration the repository ships (the chart with its default and ci/ values, each
Kustomize overlay; see ``tools.k8s_validate.render_all``) and scans it with checkov's Kubernetes
checks. Figures: checks passed, failed and skipped (each skip is a ``checkov.io/skipN``
annotation with its reason in the manifests), resources scanned, and the scan time. Checkov runs
from its own environment (.tools/checkov, ``tools/install-checkov.sh``), offline
(``--skip-download``).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from tools.k8s_validate import render_all, scan


def run() -> dict[str, float | str]:
    """Render, scan and return the figures."""
    with tempfile.TemporaryDirectory() as tmp:
        sets = render_all()
        for mset in sets:
            (Path(tmp) / f"{mset.name}.yaml").write_text(mset.text)
        t0 = time.perf_counter()
        report = scan(Path(tmp))
        seconds = time.perf_counter() - t0
    summary = report["summary"]
    return {
        "checkov_version": str(summary["checkov_version"]),
        "manifest_sets": float(len(sets)),
        "resources_scanned": float(summary["resource_count"]),
        "checks_passed": float(summary["passed"]),
        "checks_failed": float(summary["failed"]),
        "checks_skipped": float(summary["skipped"]),
        "scan_seconds": round(seconds, 1),
    }
