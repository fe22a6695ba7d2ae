"""The retraining trigger acts once per cause, and only on retraining alerts."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.retrain import Cause, Ledger, causes_from_alerts, retrain_if_needed

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


def test_alertmanager_webhook_starts_one_run_and_rejects_bad_payloads(tmp_path: Path) -> None:
    import json
    import threading
    import urllib.error
    import urllib.request

    from mlops.retrain import serve_alert_webhook

    runs: list[str] = []
    server = serve_alert_webhook("127.0.0.1", 0, Ledger(tmp_path / "l.json"),
                                 lambda causes: runs.append("x") or f"run-{len(runs)}")  # fmt: skip
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    payload = {"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "FlightDelayFeatureDrift",
                                        "feature": "temp", "comparison": "skew"}}]}  # fmt: skip

    def post(body: bytes) -> tuple[int, dict]:
        req = urllib.request.Request(url, body, {"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    try:
        first = post(json.dumps(payload).encode())
        again = post(json.dumps(payload).encode())  # Alertmanager re-sends while firing
        bad = post(b"{not json")
    finally:
        server.shutdown()
    assert first[0] == 200 and first[1]["started"][0]["run"] == "run-1"
    assert again[0] == 200 and again[1]["started"] == [] and runs == ["x"]
    assert bad[0] == 400 and "bad Alertmanager payload" in bad[1]["error"]
