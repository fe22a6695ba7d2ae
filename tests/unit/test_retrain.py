"""The retraining trigger acts once per cause, and only on retraining alerts.

A cause counts as handled only when its run succeeded, and only for the cool-down; a claimed
cause waits for its run to end or its lease to expire. Races between processes and the webhook
receiver are in test_retrain_ledger_race.py and test_retrain_webhook_server.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mlops.retrain import Cause, Ledger, RunFailed, causes_from_alerts, retrain_if_needed

pytestmark = pytest.mark.unit


def drift_alert(feature: str, value: str = "0.3", state: str = "firing") -> dict:
    return {"metric": {"alertname": "FlightDelayFeatureDrift", "alertstate": state,
                       "feature": feature, "comparison": "drift", "value": value}}  # fmt: skip


def test_only_firing_retraining_alerts_are_causes() -> None:
    alerts = [
        drift_alert("temp"),
        drift_alert("dewp", state="pending"),
        {"metric": {"alertname": "FlightDelayHighLatency", "alertstate": "firing"}},
        {"labels": {"alertname": "FlightDelaySlicePositiveRateShift", "slice_key": "carrier",
                    "slice_value": "UA"}, "status": "firing"},  # Alertmanager webhook form
    ]  # fmt: skip
    causes = causes_from_alerts(alerts)
    assert [c.alertname for c in causes] == [
        "FlightDelayFeatureDrift", "FlightDelaySlicePositiveRateShift",
    ]  # fmt: skip


def test_same_cause_starts_exactly_one_run(tmp_path: Path) -> None:
    runs: list[list[str]] = []

    def start(causes: list[Cause]) -> str:
        runs.append([c.describe() for c in causes])
        return f"run-{len(runs)}"

    ledger = Ledger(tmp_path / "ledger.json")
    first = retrain_if_needed(causes_from_alerts([drift_alert("temp")] * 2), ledger, start)
    assert first.started == [{"run": "run-1", "causes": [
        "FlightDelayFeatureDrift(comparison=drift, feature=temp)"]}]  # fmt: skip
    # The alert keeps firing with another value: same cause, no new run.
    again = retrain_if_needed(causes_from_alerts([drift_alert("temp", "0.4")]), ledger, start)
    assert again.started == [] and "already handled by run run-1" in again.skipped[0]
    # A new cause does start a run; the ledger survives a new Ledger object (a new process).
    third = retrain_if_needed(
        causes_from_alerts([drift_alert("temp"), drift_alert("humid")]),
        Ledger(tmp_path / "ledger.json"),
        start,
    )
    assert len(runs) == 2 and third.started[0]["causes"] == [
        "FlightDelayFeatureDrift(comparison=drift, feature=humid)"]  # fmt: skip


def test_nothing_to_do_starts_nothing(tmp_path: Path) -> None:
    def start(causes: list[Cause]) -> str:
        raise AssertionError("no run may start")

    result = retrain_if_needed([], Ledger(tmp_path / "l.json"), start)
    assert result.started == [] and not (tmp_path / "l.json").exists()


class Clock:
    """A settable clock, so cool-downs and leases are tested without waiting."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_failed_run_leaves_the_cause_eligible(tmp_path: Path) -> None:
    outcomes = iter([RunFailed("run-1", "ended FAILURE"), "run-2"])
    attempts: list[str] = []

    def start(causes: list[Cause]) -> str:
        attempts.append(causes[0].describe())
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    ledger = Ledger(tmp_path / "ledger.json")
    failed = retrain_if_needed(causes_from_alerts([drift_alert("temp")]), ledger, start)
    assert failed.started == [] and failed.failed[0]["run"] == "run-1"
    assert "ended FAILURE" in failed.failed[0]["error"]
    (entry,) = ledger.load().values()
    assert entry["state"] == "failed" and entry["run"] == "run-1"
    # The alert still fires: the failed cause is tried again, and this time it succeeds.
    again = retrain_if_needed(causes_from_alerts([drift_alert("temp")]), ledger, start)
    assert again.started == [{"run": "run-2", "causes": [
        "FlightDelayFeatureDrift(comparison=drift, feature=temp)"]}]  # fmt: skip
    assert len(attempts) == 2 and next(iter(ledger.load().values()))["state"] == "succeeded"


def test_any_exception_from_the_run_counts_as_failed(tmp_path: Path) -> None:
    def start(causes: list[Cause]) -> str:
        raise OSError("disk full")

    ledger = Ledger(tmp_path / "ledger.json")
    result = retrain_if_needed(causes_from_alerts([drift_alert("temp")]), ledger, start)
    assert result.failed[0]["run"] is None and "OSError: disk full" in result.failed[0]["error"]
    assert next(iter(ledger.load().values()))["state"] == "failed"


def test_handled_cause_retrains_again_after_the_cooldown(tmp_path: Path) -> None:
    clock = Clock()
    runs: list[str] = []

    def start(causes: list[Cause]) -> str:
        runs.append(f"run-{len(runs) + 1}")
        return runs[-1]

    ledger = Ledger(tmp_path / "ledger.json", cooldown=timedelta(days=30), clock=clock)
    cause = causes_from_alerts([drift_alert("temp")])
    assert retrain_if_needed(cause, ledger, start).started[0]["run"] == "run-1"
    clock.now += timedelta(days=29)
    held = retrain_if_needed(cause, ledger, start)
    assert held.started == [] and "eligible again from 2026-01-31" in held.skipped[0]
    # The same drift months later is a new problem: it retrains again.
    clock.now += timedelta(days=2)
    assert retrain_if_needed(cause, ledger, start).started[0]["run"] == "run-2"


def test_claimed_cause_waits_for_its_run_or_its_lease(tmp_path: Path) -> None:
    clock = Clock()
    ledger = Ledger(tmp_path / "ledger.json", lease=timedelta(hours=6), clock=clock)
    cause = causes_from_alerts([drift_alert("temp")])
    claim = ledger.claim(cause)  # another trigger's run is in progress
    assert [c.describe() for c in claim.causes] == [cause[0].describe()]

    def start(causes: list[Cause]) -> str:
        return "run-new"

    held = retrain_if_needed(cause, ledger, start)
    assert held.started == [] and "in progress" in held.skipped[0]
    # The claiming process died: once the lease is over, the cause is free again.
    clock.now += timedelta(hours=7)
    assert retrain_if_needed(cause, ledger, start).started[0]["run"] == "run-new"
    # The dead trigger's late report does not overwrite the newer run's entry.
    ledger.finish(claim, "run-old", succeeded=False)
    assert next(iter(ledger.load().values()))["run"] == "run-new"


def test_ledger_entries_from_before_states_count_as_succeeded(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "ledger.json"
    cause = causes_from_alerts([drift_alert("temp")])
    old = {"cause": cause[0].describe(), "run": "run-0", "at": "2025-12-20T00:00:00+00:00"}
    path.write_text(json.dumps({cause[0].fingerprint: old}))
    result = retrain_if_needed(cause, Ledger(path, clock=clock), lambda c: "run-1")
    assert result.started == [] and "already handled by run run-0" in result.skipped[0]
