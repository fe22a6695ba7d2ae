"""`mlops run` on the real pipeline shows its progress and, on failure, the failing step's log.

One real kfp.local run of the training pipeline through the CLI, on a span with broken data so the
run stops at the validation gate after ingest and validate (no training: about half a minute).
Off a terminal (pytest captures stdout) the progress is one plain line per state change.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlops import features as F
from mlops.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture
def broken_february(prepared_repo: Path, tmp_path: Path) -> Path:
    """A config whose Feast repo has a February with an unseen carrier and scaled distances."""
    repo = tmp_path / "repo"
    shutil.copytree(prepared_repo, repo, ignore=shutil.ignore_patterns("*.db"))
    flights_path = repo / "data" / "flights.parquet"
    flights = pd.read_parquet(flights_path)
    feb = flights[F.SPAN] == "2013-02"
    flights.loc[feb & (flights[F.CARRIER] == "UA"), F.CARRIER] = "ZZ"
    flights.loc[feb, "distance"] = flights.loc[feb, "distance"] * 160.9
    flights.to_parquet(flights_path, index=False)
    config = tmp_path / "mlops.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "feature_repo": str(repo),
                "runs_dir": str(tmp_path / "runs"),
                "registry_uri": str(tmp_path / "registry"),
            }
        )
    )
    main(["--config", str(config), "feast-apply"])
    return config


def test_failed_run_shows_states_then_the_failing_steps_log(
    broken_february: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["--config", str(broken_february), "run", "--through-month", "2", "--window-months", "1",
         "--run-name", "broken"]
    )  # fmt: skip
    out = capsys.readouterr().out
    run_dir = broken_february.parent / "runs" / "broken"
    logs = run_dir / "logs"

    assert code == 1, out
    lines = out.splitlines()
    # One line per state change, in order, for the steps that ran and the ones that did not.
    order = [
        "ingest-op: running", "ingest-op: succeeded in ", "validate-op: running",
        "validate-op: succeeded in ", "validation-gate-op: running",
        "validation-gate-op: failed in ", "transform-op: skipped", "deploy-op: skipped",
    ]  # fmt: skip
    at = [next(i for i, line in enumerate(lines) if line.startswith(o)) for o in order]
    assert at == sorted(at), out
    # kfp.local's own output stays out of the display and in the step files.
    assert "Executing task" not in out and "Streamed logs" not in out
    assert "Executing task 'ingest-op'" in (logs / "ingest-op.log").read_text()
    assert "Executing task 'validate-op'" in (logs / "validate-op.log").read_text()
    assert not (logs / "train-op.log").exists()
    gate_log = (logs / "validation-gate-op.log").read_text()
    assert "Traceback" in gate_log and "carrier" in gate_log

    # The summary table stays, then the failing step's last lines and where its full log is.
    assert "run broken: FAILURE" in out
    assert "  validation-gate-op FAILURE " in out and "  train-op           NOT RUN " in out
    # The decisions are read from kfp.local's run directory, not from the step logs beside it.
    assert "validation: FAILED" in out and f"outputs: {logs}" not in out
    assert "step validation-gate-op failed; its last 20 log lines:" in out
    tail = out[out.index("step validation-gate-op failed") :].splitlines()[1:21]
    assert all(line.startswith("  | ") for line in tail)
    assert lines[-1] == f"  full log: {(logs / 'validation-gate-op.log').resolve()}"

    summary = json.loads((run_dir / "summary.json").read_text())
    by_name = {s["name"]: s for s in summary["steps"]}
    assert by_name["validation-gate-op"]["status"] == "FAILURE"
    assert by_name["validation-gate-op"]["log"].endswith("logs/validation-gate-op.log")
    assert by_name["ingest-op"]["seconds"] > 0
    assert by_name["train-op"]["status"] == "NOT RUN"
