"""Retraining trigger: start a training run when drift or a slice regression crosses its threshold.

Causes come from firing Prometheus alerts (``ALERTS{alertstate="firing"}``, what the Alertmanager
webhook also delivers) or from a monitor report. Each cause has a fingerprint (alert name plus
its identifying labels); a cause that already started a run is never acted on again, so a
flapping or long-firing alert starts exactly one run. The ledger of handled causes is a JSON file
written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Alerts that mean "the model no longer fits the data"; latency or error SLOs do not retrain.
RETRAIN_ALERTS = frozenset({"FlightDelayFeatureDrift", "FlightDelaySlicePositiveRateShift",
                            "FlightDelaySliceQualityDrop"})  # fmt: skip
# Labels that identify a cause; others (values, instance) change without changing the cause.
CAUSE_LABELS = ("alertname", "feature", "comparison", "slice_key", "slice_value", "model")


@dataclass(frozen=True)
class Cause:
    """One reason to retrain."""

    alertname: str
    labels: dict[str, str]

    @property
    def fingerprint(self) -> str:
        """Stable identity of the cause."""
        ident = {k: self.labels.get(k, "") for k in CAUSE_LABELS}
        ident["alertname"] = self.alertname
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> str:
        """One line for logs and notes."""
        extra = ", ".join(f"{k}={v}" for k, v in sorted(self.labels.items()) if k in CAUSE_LABELS
                          and k != "alertname")  # fmt: skip
        return f"{self.alertname}({extra})"


@dataclass
class TriggerResult:
    """What the trigger did."""

    started: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def causes_from_alerts(alerts: Iterable[dict[str, Any]]) -> list[Cause]:
    """Retraining causes among alerts (Prometheus ``ALERTS`` series or Alertmanager payloads)."""
    causes = []
    for alert in alerts:
        labels = alert.get("labels") or alert.get("metric") or {}
        name = labels.get("alertname", "")
        state = labels.get("alertstate", alert.get("status", "firing"))
        if name in RETRAIN_ALERTS and state == "firing":
            causes.append(Cause(name, {k: str(v) for k, v in labels.items()}))
    return causes


class Ledger:
    """Handled causes, persisted so that no cause starts a second run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        """All handled causes by fingerprint."""
        return json.loads(self.path.read_text()) if self.path.is_file() else {}

    def save(self, entries: dict[str, Any]) -> None:
        """Write atomically: a crash never leaves a half-written ledger."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".ledger-")
        with os.fdopen(fd, "w") as fh:
            json.dump(entries, fh, indent=2, sort_keys=True)
        os.replace(tmp, self.path)


def retrain_if_needed(
    causes: list[Cause], ledger: Ledger, start_run: Callable[[list[Cause]], str]
) -> TriggerResult:
    """Start one run for all new causes; causes already handled are skipped.

    Args:
        causes: Current retraining causes.
        ledger: Record of causes already acted on.
        start_run: Starts a training run and returns its id (``mlops run`` locally,
            ``mlops submit`` in a cluster).
    """
    entries = ledger.load()
    result = TriggerResult()
    new: list[Cause] = []
    for cause in causes:
        if cause.fingerprint in entries:
            result.skipped.append(
                f"{cause.describe()}: already handled by run {entries[cause.fingerprint]['run']}"
            )
        elif cause.fingerprint not in {c.fingerprint for c in new}:
            new.append(cause)
    if not new:
        return result
    run_id = start_run(new)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    for cause in new:
        entries[cause.fingerprint] = {"cause": cause.describe(), "run": run_id, "at": now}
    ledger.save(entries)
    result.started.append({"run": run_id, "causes": [c.describe() for c in new]})
    return result


def serve_alert_webhook(
    host: str, port: int, ledger: Ledger, start_run: Callable[[list[Cause]], str]
) -> Any:
    """An HTTP server for Alertmanager's webhook: ``POST /`` with its JSON payload.

    Each delivery goes through :func:`retrain_if_needed`, so repeated notifications of a cause
    (Alertmanager re-sends while an alert fires) start one run. Returns the server; call
    ``serve_forever()`` on it (``mlops alert-receiver`` does).
    """
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    lock = threading.Lock()  # one delivery at a time: the ledger is read, then written

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("content-length", 0))
                payload = json.loads(self.rfile.read(length) or b"{}")
                alerts = payload.get("alerts") if isinstance(payload, dict) else None
                if not isinstance(alerts, list):
                    raise ValueError("payload has no 'alerts' list")
            except ValueError as err:
                self._reply(400, {"error": f"bad Alertmanager payload: {err}"})
                return
            with lock:
                result = retrain_if_needed(causes_from_alerts(alerts), ledger, start_run)
            self._reply(200, result.to_dict())

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return ThreadingHTTPServer((host, port), Handler)
