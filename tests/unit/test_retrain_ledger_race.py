"""Real OS processes race on one ledger: exactly one run starts per cause.

The cron trigger (``mlops retrain-if-needed``) and the webhook receiver are separate processes
sharing the ledger file; without the file lock each would read the empty ledger and start its
own run for the same drift.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from mlops.retrain import Cause, Ledger, serve_alert_webhook

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

# One trigger process: waits for the start signal, then handles the same firing alert. Its run
# appends the pid to a shared file and takes a while, as a real run does.
TRIGGER = """
import json, os, sys, time
from pathlib import Path
from mlops.retrain import Ledger, causes_from_alerts, retrain_if_needed

ledger, runs, go = (Path(a) for a in sys.argv[1:4])
alert = {"labels": {"alertname": "FlightDelayFeatureDrift", "feature": "temp",
                    "comparison": "drift"}, "status": "firing"}

def start(causes):
    with open(runs, "a") as fh:
        fh.write(f"{os.getpid()}\\n")
    time.sleep(float(sys.argv[4]))
    return f"run-{os.getpid()}"

while not go.exists():
    time.sleep(0.005)
result = retrain_if_needed(causes_from_alerts([alert]), Ledger(ledger), start)
print(json.dumps(result.to_dict()))
"""


def trigger(tmp_path: Path, run_seconds: float) -> subprocess.Popen[str]:
    args = [str(tmp_path / "ledger.json"), str(tmp_path / "runs.txt"), str(tmp_path / "go")]
    return subprocess.Popen([sys.executable, "-c", TRIGGER, *args, str(run_seconds)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)  # fmt: skip


def test_processes_racing_on_one_cause_start_exactly_one_run(tmp_path: Path) -> None:
    procs = [trigger(tmp_path, run_seconds=0.5) for _ in range(4)]
    time.sleep(1.5)  # every process has imported and waits for the signal
    (tmp_path / "go").touch()
    results = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    runs = (tmp_path / "runs.txt").read_text().split()
    assert len(runs) == 1, f"{len(runs)} runs started for one cause"
    started = [r for r in results if r["started"]]
    assert len(started) == 1 and started[0]["started"][0]["run"] == f"run-{runs[0]}"
    # The others saw the claim (in progress) or the finished run (already handled).
    for r in results:
        if not r["started"]:
            assert r["skipped"] and ("in progress" in r["skipped"][0]
                                     or "already handled" in r["skipped"][0])  # fmt: skip
    (entry,) = Ledger(tmp_path / "ledger.json").load().values()
    assert entry["state"] == "succeeded" and entry["run"] == f"run-{runs[0]}"


def test_webhook_run_in_progress_holds_off_the_cron_and_keeps_answering(tmp_path: Path) -> None:
    release = threading.Event()
    runs: list[str] = []

    def slow_start(causes: list[Cause]) -> str:
        runs.append(causes[0].describe())
        release.wait(30)  # a long local training run
        return f"run-{len(runs)}"

    server = serve_alert_webhook("127.0.0.1", 0, Ledger(tmp_path / "ledger.json"), slow_start,
                                 token="t0ken")  # fmt: skip
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"

    def deliver(feature: str) -> tuple[int, dict, float]:
        body = json.dumps({"alerts": [{"status": "firing", "labels": {
            "alertname": "FlightDelayFeatureDrift", "feature": feature,
            "comparison": "drift"}}]}).encode()  # fmt: skip
        req = urllib.request.Request(url, body, {"content-type": "application/json",
                                                 "authorization": "Bearer t0ken"})  # fmt: skip
        t0 = time.monotonic()
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read()), time.monotonic() - t0

    try:
        first = deliver("temp")
        assert first[0] == 202 and first[2] < 2.0  # answered before the run ends
        # The cron trigger, another process, fires on the same cause while the run is going.
        (tmp_path / "go").touch()
        cron = trigger(tmp_path, run_seconds=0)
        cron_result = json.loads(cron.communicate(timeout=60)[0])
        assert cron_result["started"] == [] and "in progress" in cron_result["skipped"][0]
        assert not (tmp_path / "runs.txt").exists()
        # A re-sent notification is answered at once and starts nothing; a new cause queues.
        again = deliver("temp")
        assert again[0] == 200 and again[1]["claimed"] == [] and again[2] < 2.0
        other = deliver("humid")
        assert other[0] == 202 and other[2] < 2.0
        release.set()
        assert server.drain(30)
    finally:
        release.set()
        server.shutdown()
        server.server_close()
    assert len(runs) == 2 and [r["run"] for r in server.outcomes.started] == ["run-1", "run-2"]
    states = {e["cause"]: e["state"] for e in Ledger(tmp_path / "ledger.json").load().values()}
    assert set(states.values()) == {"succeeded"}
