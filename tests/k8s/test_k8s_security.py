"""Checkov scan of everything rendered: no failed check, every skip justified."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tools.k8s_validate import ManifestSet, scan

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def report(rendered: list[ManifestSet], checkov: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("rendered")
    for mset in rendered:
        (out / f"{mset.name}.yaml").write_text(mset.text)
    return scan(out, checkov)


def test_scan_has_no_failures(report: dict) -> None:
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 500
    assert report["summary"]["parsing_errors"] == 0


def test_every_skip_carries_a_reason(rendered: list[ManifestSet], report: dict) -> None:
    skips = [
        m.group(1, 2)
        for mset in rendered
        for m in re.finditer(r"checkov\.io/skip\d+: (CKV\w+)=(.*)", mset.text)
    ]
    assert skips
    for check_id, reason in skips:
        assert len(reason.split()) >= 5, (check_id, reason)
    skipped = {c["check_id"] for c in report["results"]["skipped_checks"]}
    assert skipped == {check_id for check_id, _ in skips}


def test_scan_fails_an_insecure_pod(checkov: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\n  namespace: x\nspec:\n"
        "  containers:\n    - name: c\n      image: busybox:latest\n"
        "      securityContext:\n        privileged: true\n"
    )
    report = scan(tmp_path, checkov)
    failed = {c["check_id"] for c in report["results"]["failed_checks"]}
    assert "CKV_K8S_16" in failed  # privileged container
    assert "CKV_K8S_22" in failed  # writable root filesystem
