"""The canonical alert rules, unit-tested with the real promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mlops import features as F
from mlops import telemetry as T
from tools.k8s_validate import CHART

pytestmark = pytest.mark.integration

RULES_DIR = CHART / "files" / "prometheus"


def _promtool(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, check=False)


def test_rule_file_is_valid(promtool: str) -> None:
    proc = _promtool(promtool, "check", "rules", "alerts.rules.yml", cwd=RULES_DIR)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_unit_tests_of_the_rules_pass(promtool: str) -> None:
    proc = _promtool(promtool, "test", "rules", "alerts_test.yml", cwd=RULES_DIR)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@pytest.mark.parametrize(
    ("original", "broken"),
    [
        # Error-rate SLO loosened from 1% to 5%: version 3's 2% no longer fires.
        ("            > 0.01\n", "            > 0.05\n"),
        # Drift compared without the comparison label: skew thresholds would leak into drift.
        ("on(feature, comparison)", "on(feature) group_left"),
        # Canary alert on any state rather than a roll-back.
        ('{state="rolled_back"} == 1', " == 1"),
        # Request-log drops counted only past 100 rows: the 25 dropped no longer fire.
        ("dropped_rows_total[10m]) > 0", "dropped_rows_total[10m]) > 100"),
        # Slice shift threshold raised from 50% to 500%: UA's jump no longer fires.
        ("> 0.5 * flight_delay:slice_positive_rate", "> 5 * flight_delay:slice_positive_rate"),
    ],
)
def test_unit_tests_fail_when_a_rule_is_broken(
    promtool: str, tmp_path: Path, original: str, broken: str
) -> None:
    rules = (RULES_DIR / "alerts.rules.yml").read_text()
    assert original in rules
    (tmp_path / "alerts.rules.yml").write_text(rules.replace(original, broken, 1))
    shutil.copy(RULES_DIR / "alerts_test.yml", tmp_path / "alerts_test.yml")
    proc = _promtool(promtool, "test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert proc.returncode != 0, proc.stdout
    assert "FAILED:" in proc.stdout + proc.stderr


def test_rules_use_only_metric_names_of_the_telemetry_module() -> None:
    groups = yaml.safe_load((RULES_DIR / "alerts.rules.yml").read_text())["groups"]
    exprs = " ".join(r["expr"] for g in groups for r in g["rules"])
    names = {T.FEATURE_DRIFT, T.FEATURE_DRIFT_THRESHOLD, T.PREDICTIONS, T.REQUESTS,
             T.REQUEST_ERRORS, f"{T.STAGE_LATENCY}_bucket", T.ROLLOUT_STATE,
             T.FEATURE_FRESHNESS, T.REQUEST_LOG_DROPPED}  # fmt: skip
    for name in names:
        assert name in exprs, name
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    assert alerts == {
        "FlightDelayFeatureDrift",
        "FlightDelaySlicePositiveRateShift",
        "FlightDelayErrorRateHigh",
        "FlightDelayLatencyP99High",
        "FlightDelayCanaryRolledBack",
        "FlightDelayRealtimeFeaturesStale",
        "FlightDelayRequestLogDropping",
    }
    # The stale-feed alert's bound is the serving staleness bound of the contract.
    stale = next(r for g in groups for r in g["rules"]
                 if r.get("alert") == "FlightDelayRealtimeFeaturesStale")  # fmt: skip
    assert stale["expr"].endswith(f"> {F.REALTIME_MAX_AGE_MINUTES * 60}")
