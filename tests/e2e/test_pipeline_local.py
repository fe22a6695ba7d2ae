"""The real DAG through kfp.local on the real data: a good run, then a corrupted span.

Both runs share one registry: the first blesses and promotes a model; the second, on a span with
broken data, must stop at the validation gate with the production alias unchanged.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from mlops import features as F
from mlops.feast_ops import apply
from mlops.registry import ModelRegistry
from mlops.runner import RunSummary, run_local

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

MODEL = "flight-delay"
HP = json.dumps({"epochs": 3, "hidden_units": [32, 16], "batch_size": 1024})


def arguments(repo: Path, registry: Path, first: str, last: str) -> dict[str, object]:
    return {
        "feature_repo": str(repo),
        "first_span": first,
        "last_span": last,
        "registry_uri": str(registry),
        "model_name": MODEL,
        "hyperparameters": HP,
    }


@pytest.fixture(scope="module")
def workspace(prepared_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the prepared repo (its sources get corrupted later) and a registry."""
    ws = tmp_path_factory.mktemp("e2e")
    shutil.copytree(prepared_repo, ws / "repo", ignore=shutil.ignore_patterns("*.db"))
    apply(ws / "repo")
    return ws


@pytest.fixture(scope="module")
def good_run(workspace: Path) -> RunSummary:
    return run_local(
        workspace / "runs",
        arguments(workspace / "repo", workspace / "registry", "2013-01", "2013-01"),
        "good",
    )


def test_good_run_registers_a_blessed_model_with_lineage(
    good_run: RunSummary, workspace: Path
) -> None:
    assert good_run.status == "SUCCESS", "\n".join(good_run.lines())
    steps = {s.name: s for s in good_run.steps}
    assert all(s.status == "SUCCESS" for s in steps.values()), good_run.lines()
    assert all(s.seconds and s.seconds > 0 for s in steps.values())

    # Validation: statistics and anomalies exist, the verdict passed.
    validate = steps["validate-op"].outputs
    assert Path(validate["statistics"]["path"]).exists()
    assert Path(validate["anomalies"]["path"]).exists()
    assert good_run.decisions["validation"] == "passed"

    # Blessing with reasons, metrics logged.
    assert good_run.decisions["blessed"] is True
    assert good_run.decisions["reasons"]
    assert 0.6 < good_run.decisions["auc"] < 1.0

    # A registry version with lineage that answers "which data, code and parameters".
    registry = ModelRegistry(str(workspace / "registry"))
    prod = registry.resolve(MODEL, "production")
    lineage = registry.lineage(MODEL, prod.version)
    assert lineage.spans == ["2013-01"]
    assert len(lineage.train_hash) == 64 and len(lineage.eval_hash) == 64
    assert lineage.hyperparameters["epochs"] == 3
    assert lineage.blessed is True
    assert good_run.decisions["registry version"] == prod.version

    # The run report has the steps and the per-slice table.
    html = good_run.report.read_text()
    assert 'id="steps"' in html and 'id="slices"' in html


def test_corrupted_span_stops_at_validation(good_run: RunSummary, workspace: Path) -> None:
    registry = ModelRegistry(str(workspace / "registry"))
    before = registry.resolve(MODEL, "production").version

    # Corrupt February: a carrier code never seen, and distances in kilometres times 100.
    flights_path = workspace / "repo" / "data" / "flights.parquet"
    flights = pd.read_parquet(flights_path)
    feb = flights[F.SPAN] == "2013-02"
    flights.loc[feb & (flights[F.CARRIER] == "UA"), F.CARRIER] = "ZZ"
    flights.loc[feb, "distance"] = flights.loc[feb, "distance"] * 160.9
    flights.to_parquet(flights_path, index=False)

    bad = run_local(
        workspace / "runs",
        arguments(workspace / "repo", workspace / "registry", "2013-02", "2013-02"),
        "corrupted",
    )
    assert bad.status.startswith("FAILURE")
    steps = {s.name: s for s in bad.steps}
    assert steps["validate-op"].status == "SUCCESS"  # the report is written...
    assert steps["validation-gate-op"].status == "FAILURE"  # ...and the gate stops the run
    assert steps["transform-op"].status == "NOT RUN"
    assert steps["train-op"].status == "NOT RUN"
    assert bad.decisions["validation"] == "FAILED"
    report = json.dumps(bad.decisions)
    assert "carrier" in report and "distance" in report
    assert registry.resolve(MODEL, "production").version == before


def test_report_renders_in_headless_chromium(good_run: RunSummary, tmp_path: Path) -> None:
    from tools.browser import chromium, dump_dom, screenshot

    try:
        chromium()
    except FileNotFoundError:
        subprocess.run(["bash", "tools/install-chromium.sh"], check=True)
    dom = dump_dom(good_run.report)
    assert '<table id="steps"' in dom and '<table id="slices"' in dom
    for step in ("ingest-op", "validate-op", "train-op", "evaluate-op", "push-op"):
        assert step in dom
    png = screenshot(good_run.report, tmp_path / "report.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
