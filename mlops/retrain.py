"""Retraining trigger: start a training run when drift or a slice regression crosses its threshold.

Causes come from firing Prometheus alerts (``ALERTS{alertstate="firing"}``, what the Alertmanager
webhook also delivers) or from a monitor report. Each cause has a fingerprint (alert name plus
its identifying labels). The ledger records each cause's last run: a cause whose run succeeded is
left alone for a cool-down (a flapping or long-firing alert starts one run; the same drift months
later starts another), a cause whose run failed is eligible again at once, and a cause whose run
is in progress is held by a lease. The cron trigger (``mlops retrain-if-needed``) and the webhook
receiver (``mlops alert-receiver``) share the ledger under a file lock, so one cause never starts
two runs at once.

The webhook receiver authenticates every request with a shared token, caps the body size and
refuses any malformed request with a 4xx naming the reason; it answers before the run starts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mlops.errors import DataError
from mlops.localfiles import exclusive_lock, replace_atomically

log = logging.getLogger(__name__)

# Alerts that mean "the model no longer fits the data"; latency or error SLOs do not retrain.
RETRAIN_ALERTS = frozenset({"FlightDelayFeatureDrift", "FlightDelaySlicePositiveRateShift",
                            "FlightDelaySliceQualityDrop"})  # fmt: skip
# Labels that identify a cause; others (values, instance) change without changing the cause.
CAUSE_LABELS = ("alertname", "feature", "comparison", "slice_key", "slice_value", "model")
# A cause retrained successfully waits this long before the same cause retrains again.
DEFAULT_COOLDOWN = timedelta(days=30)
# Longer than a training run: a claim older than this belongs to a trigger that died.
DEFAULT_LEASE = timedelta(hours=6)
# An Alertmanager payload is a few KiB per alert; a group of hundreds stays far below this.
MAX_BODY_BYTES = 1 << 20
# Alertmanager's payload nests 3 levels (payload, alerts, labels); leave room, refuse abuse.
MAX_JSON_DEPTH = 8
REQUEST_READ_TIMEOUT_S = 10.0
WEBHOOK_TOKEN_ENV = "MLOPS_ALERT_RECEIVER_TOKEN"


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
    """What the trigger did: runs that succeeded, causes held back, runs that failed."""

    started: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


class RunFailed(RuntimeError):
    """A retraining run started but did not succeed; its causes stay eligible."""

    def __init__(self, run_id: str, reason: str) -> None:
        super().__init__(f"run {run_id} {reason}")
        self.run_id = run_id


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


# The alert that drift or skew of a feature raises (charts/.../alerts.rules.yml), and the labels
# it carries: a monitoring result read directly gives the same causes as the alert would.
FEATURE_DRIFT_ALERT = "FlightDelayFeatureDrift"


def causes_from_monitor(result: Mapping[str, Any], model: str) -> list[Cause]:
    """Retraining causes in a monitoring result (``mlops monitor``'s ``monitor.json``).

    Without a Prometheus evaluating the alert rules (the local loop), the features the monitor
    found drifted or skewed are the causes ``FlightDelayFeatureDrift`` would have fired for.

    Raises:
        DataError: ``result`` is not a monitoring result.
    """
    causes = []
    for comparison, key in (("drift", "drifted"), ("skew", "skewed")):
        features = result.get(key, [])
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise DataError(f"monitoring result: {key} must be a list of feature names")
        for feature in features:
            labels = {"alertname": FEATURE_DRIFT_ALERT, "feature": feature,
                      "comparison": comparison, "model": model}  # fmt: skip
            causes.append(Cause(FEATURE_DRIFT_ALERT, labels))
    return causes


@dataclass(frozen=True)
class Claim:
    """Causes one trigger holds as ``running`` in the ledger until its run ends."""

    id: str
    causes: list[Cause]
    skipped: list[str]


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


class Ledger:
    """Handled causes, persisted and shared by every trigger on the machine.

    Each entry is ``running`` (claimed, with a lease), ``succeeded`` or ``failed``. A cause is
    eligible when it has no entry, its run failed, its success is older than ``cooldown``, or
    its claim's lease ran out (the claiming process died). Every read-modify-write holds an
    exclusive ``fcntl.flock`` on ``<ledger>.lock`` beside the file, so two processes (the cron
    trigger and the webhook receiver) never claim one cause twice; the file itself is replaced
    atomically, so a crash never leaves it half-written.
    """

    def __init__(
        self,
        path: Path,
        cooldown: timedelta = DEFAULT_COOLDOWN,
        lease: timedelta = DEFAULT_LEASE,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.path = path
        self.cooldown = cooldown
        self.lease = lease
        self.clock = clock

    @property
    def lock_path(self) -> Path:
        """The lock file beside the ledger (the ledger itself is replaced, never locked)."""
        return self.path.with_name(self.path.name + ".lock")

    def _locked(self) -> AbstractContextManager[None]:
        return exclusive_lock(str(self.lock_path))

    def load(self) -> dict[str, Any]:
        """All entries by fingerprint.

        Raises:
            DataError: The file is not a ledger (not a JSON object).
        """
        if not self.path.is_file():
            return {}
        try:
            entries = json.loads(self.path.read_text())
        except ValueError as err:
            raise DataError(f"retraining ledger {self.path} is not JSON: {err}") from err
        if not isinstance(entries, dict):
            raise DataError(f"retraining ledger {self.path} must hold a JSON object")
        return entries

    def save(self, entries: dict[str, Any]) -> None:
        """Write atomically: a crash never leaves a half-written ledger."""
        data = json.dumps(entries, indent=2, sort_keys=True).encode()
        replace_atomically(str(self.path), data, prefix=".ledger-", mode=None)

    def _holds_back(self, entry: dict[str, Any], now: datetime) -> str | None:
        """Why an entry still holds its cause back, or None when the cause is eligible."""
        # Entries written before states existed recorded started runs only.
        state = entry.get("state", "succeeded")
        if state == "running":
            until = datetime.fromisoformat(entry["lease_until"])
            if now < until:
                return f"a run claimed at {entry['at']} is in progress (lease until {_iso(until)})"
        elif state == "succeeded":
            done = datetime.fromisoformat(entry.get("finished") or entry["at"])
            if now < done + self.cooldown:
                return (
                    f"already handled by run {entry['run']} at {_iso(done)}; "
                    f"eligible again from {_iso(done + self.cooldown)}"
                )
        return None

    def claim(self, causes: list[Cause]) -> Claim:
        """Mark the eligible causes ``running`` under the lock; the rest are skipped, with why."""
        claim_id = uuid.uuid4().hex
        claimed: list[Cause] = []
        skipped: list[str] = []
        with self._locked():
            entries = self.load()
            now = self.clock()
            for cause in causes:
                fingerprint = cause.fingerprint
                if fingerprint in {c.fingerprint for c in claimed}:
                    continue
                entry = entries.get(fingerprint)
                reason = self._holds_back(entry, now) if entry is not None else None
                if reason:
                    skipped.append(f"{cause.describe()}: {reason}")
                    continue
                claimed.append(cause)
                entries[fingerprint] = {"cause": cause.describe(), "state": "running",
                                        "claim": claim_id, "run": None, "at": _iso(now),
                                        "lease_until": _iso(now + self.lease)}  # fmt: skip
            if claimed:
                self.save(entries)
        return Claim(claim_id, claimed, skipped)

    def finish(
        self, claim: Claim, run_id: str | None, succeeded: bool, error: str | None = None
    ) -> None:
        """Record how a claim's run ended (not for causes another trigger took over)."""
        with self._locked():
            entries = self.load()
            now = _iso(self.clock())
            for cause in claim.causes:
                entry = entries.get(cause.fingerprint)
                if entry is None or entry.get("claim") != claim.id:
                    continue
                entry.pop("lease_until", None)
                entry.update(state="succeeded" if succeeded else "failed", run=run_id,
                             finished=now)  # fmt: skip
                if error:
                    entry["error"] = error
            self.save(entries)


def run_claim(
    claim: Claim, ledger: Ledger, start_run: Callable[[list[Cause]], str], result: TriggerResult
) -> None:
    """Run one claim's training run and record the outcome in the ledger and ``result``."""
    causes = [c.describe() for c in claim.causes]
    try:
        run_id = start_run(claim.causes)
    except Exception as err:
        failed_run: str | None = getattr(err, "run_id", None)
        reason = f"{type(err).__name__}: {err}"
        ledger.finish(claim, failed_run, succeeded=False, error=reason)
        result.failed.append({"run": failed_run, "causes": causes, "error": reason})
        log.warning("retraining for %s failed: %s", "; ".join(causes), reason)
        return
    ledger.finish(claim, run_id, succeeded=True)
    result.started.append({"run": run_id, "causes": causes})


def retrain_if_needed(
    causes: list[Cause], ledger: Ledger, start_run: Callable[[list[Cause]], str]
) -> TriggerResult:
    """Start one run for all eligible causes and record whether it succeeded.

    Args:
        causes: Current retraining causes.
        ledger: Record of causes acted on.
        start_run: Runs a training run and returns its id once it succeeded; raises (best
            :class:`RunFailed`, which carries the run id) when it did not. ``mlops run``
            locally, ``mlops submit --wait`` in a cluster.

    Returns:
        The run that succeeded (``started``) or failed (``failed``, its causes eligible again)
        and the causes held back.
    """
    claim = ledger.claim(causes)
    result = TriggerResult(skipped=list(claim.skipped))
    if claim.causes:
        run_claim(claim, ledger, start_run, result)
    return result


class PayloadError(ValueError):
    """A webhook request refused with a 4xx status and a reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, iteratively (a recursive walk could itself overflow)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(node, dict):
            stack.extend((child, level + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, level + 1) for child in node)
    return deepest


def _field(name: str) -> str:
    """A client-chosen key, cut short so an error message stays bounded."""
    return name if len(name) <= 64 else name[:61] + "..."


def parse_alertmanager_payload(body: bytes) -> list[dict[str, Any]]:
    """The alerts of an Alertmanager webhook body, validated.

    Raises:
        PayloadError: Not UTF-8 JSON, nested deeper than an Alertmanager payload can be, or a
            field of the wrong type; the message names the field.
    """
    try:
        payload = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise PayloadError(400, "body is not UTF-8") from err
    except RecursionError as err:
        raise PayloadError(400, f"body nests deeper than {MAX_JSON_DEPTH} levels") from err
    except ValueError as err:
        raise PayloadError(400, f"body is not JSON: {err}") from err
    if _depth(payload) > MAX_JSON_DEPTH:
        raise PayloadError(400, f"body nests deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(payload, dict):
        raise PayloadError(400, "body must be a JSON object (an Alertmanager webhook payload)")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError(400, "field 'alerts' must be a list")
    for i, alert in enumerate(alerts):
        if not isinstance(alert, dict):
            raise PayloadError(400, f"field 'alerts[{i}]' must be an object")
        if not isinstance(alert.get("status", ""), str):
            raise PayloadError(400, f"field 'alerts[{i}].status' must be a string")
        labels = alert.get("labels")
        if not isinstance(labels, dict):
            raise PayloadError(400, f"field 'alerts[{i}].labels' must be an object")
        for key, value in labels.items():
            if not isinstance(value, str):
                raise PayloadError(
                    400, f"field 'alerts[{i}].labels.{_field(key)}' must be a string"
                )
        if "alertname" not in labels:
            raise PayloadError(400, f"field 'alerts[{i}].labels.alertname' is missing")
    return alerts


def load_webhook_token(token_file: Path | None, environ: Mapping[str, str]) -> str | None:
    """The receiver's shared secret: the file's content, else ``$MLOPS_ALERT_RECEIVER_TOKEN``.

    Raises:
        DataError: The file is missing or empty.
    """
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as err:
            raise DataError(f"--token-file {token_file}: {err.strerror}") from err
        if not token:
            raise DataError(f"--token-file {token_file} is empty")
        return token
    return environ.get(WEBHOOK_TOKEN_ENV) or None


def authorized(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries the token (Bearer, or Basic's password)."""
    scheme, _, value = (header or "").strip().partition(" ")
    if scheme.lower() == "bearer":
        given = value.strip().encode()
    elif scheme.lower() == "basic":
        try:
            given = base64.b64decode(value.strip(), validate=True).partition(b":")[2]
        except (ValueError, binascii.Error):
            return False
    else:
        return False
    # Constant time: the comparison does not reveal how much of a guess was right.
    return hmac.compare_digest(given, token.encode())


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AlertReceiver(ThreadingHTTPServer):
    """Alertmanager webhook server: claims causes per delivery, runs them in one worker thread.

    A delivery only claims its causes in the ledger and is answered at once (202 when it
    claimed some), so a training run that takes an hour never holds Alertmanager's request
    open or blocks later deliveries; the worker runs the claims one after another.
    """

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        ledger: Ledger,
        start_run: Callable[[list[Cause]], str],
        token: str | None,
        max_body: int,
        read_timeout_s: float,
    ) -> None:
        super().__init__(address, _WebhookHandler)
        self.read_timeout_s = read_timeout_s
        self.ledger = ledger
        self.start_run = start_run
        self.token = token
        self.max_body = max_body
        self.outcomes = TriggerResult()
        self.jobs: queue.Queue[Claim | None] = queue.Queue()
        self.worker = threading.Thread(target=self._work, name="retrain-worker", daemon=True)
        self.worker.start()

    def _work(self) -> None:
        while (claim := self.jobs.get()) is not None:
            try:
                run_claim(claim, self.ledger, self.start_run, self.outcomes)
            except Exception:  # a ledger write failed: the lease expires and frees the causes
                log.exception("recording the retraining outcome failed")
            finally:
                self.jobs.task_done()

    def drain(self, timeout_s: float) -> bool:
        """Wait until every claimed run has ended; False if some still run after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.jobs.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.jobs.unfinished_tasks

    def server_close(self) -> None:
        """Stop the worker after the run in progress, then close the socket."""
        self.jobs.put(None)
        super().server_close()


class _WebhookHandler(BaseHTTPRequestHandler):
    server: AlertReceiver

    def setup(self) -> None:
        # A client that declares a body and never sends it gets its socket closed, not a thread.
        super().setup()
        self.connection.settimeout(self.server.read_timeout_s)

    def do_POST(self) -> None:
        try:
            alerts = self._read_alerts()
            claim = self.server.ledger.claim(causes_from_alerts(alerts))
        except PayloadError as err:
            self._reply(err.status, {"error": err.reason})
            return
        except Exception as err:  # the receiver answers every request and keeps serving
            log.exception("webhook delivery failed")
            self._reply(500, {"error": f"internal error: {type(err).__name__}"})
            return
        if claim.causes:
            self.server.jobs.put(claim)
        claimed = [c.describe() for c in claim.causes]
        self._reply(202 if claimed else 200, {"claimed": claimed, "skipped": claim.skipped})

    def _read_alerts(self) -> list[dict[str, Any]]:
        token = self.server.token
        if token is not None and not authorized(self.headers.get("authorization"), token):
            raise PayloadError(401, "missing or wrong credentials (Authorization: Bearer)")
        ctype = (self.headers.get("content-type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise PayloadError(415, "Content-Type must be application/json")
        if self.headers.get("transfer-encoding"):
            raise PayloadError(411, "Transfer-Encoding is not accepted: send Content-Length")
        lengths = self.headers.get_all("content-length") or []
        if not lengths:
            raise PayloadError(411, "Content-Length is required")
        if len(set(lengths)) > 1 or not re.fullmatch(r"[0-9]+", lengths[0].strip()):
            raise PayloadError(400, "Content-Length must be one non-negative integer")
        length = int(lengths[0])
        if length > self.server.max_body:
            raise PayloadError(413, f"body over {self.server.max_body} bytes")
        try:
            body = self.rfile.read(length)
        except TimeoutError as err:
            raise PayloadError(408, "body not received in time") from err
        if len(body) < length:
            raise PayloadError(400, "body shorter than its Content-Length")
        return parse_alertmanager_payload(body)

    def do_GET(self) -> None:
        if self.path == "/-/healthy":
            self._reply(200, {"status": "ok"})
        else:
            self._reply(405, {"error": "only POST is accepted"})

    def do_PUT(self) -> None:
        self._reply(405, {"error": "only POST is accepted"})

    do_DELETE = do_PATCH = do_PUT

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        if status == 401:
            self.send_header("www-authenticate", 'Bearer realm="mlops-alert-receiver"')
        if status == 405:
            self.send_header("allow", "POST")
        # The body of a refused request may be unread: the connection cannot be reused.
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("webhook %s: " + format, self.address_string(), *args)


def serve_alert_webhook(
    host: str,
    port: int,
    ledger: Ledger,
    start_run: Callable[[list[Cause]], str],
    *,
    token: str | None,
    allow_unauthenticated: bool = False,
    max_body: int = MAX_BODY_BYTES,
    read_timeout_s: float = REQUEST_READ_TIMEOUT_S,
) -> AlertReceiver:
    """An HTTP server for Alertmanager's webhook: ``POST`` with its JSON payload.

    Each delivery claims its eligible causes in the ledger and is answered at once; one worker
    thread runs the claimed runs. Repeated notifications of a cause (Alertmanager re-sends while
    an alert fires) start one run. Returns the server; call ``serve_forever()`` on it
    (``mlops alert-receiver`` does).

    Args:
        host: Address to bind.
        port: Port to bind (0: a free one).
        ledger: The ledger shared with the cron trigger.
        start_run: Runs a training run, as for :func:`retrain_if_needed`.
        token: Shared secret every request must carry (Bearer, or Basic's password).
        allow_unauthenticated: Serve without a token; refused unless ``host`` is loopback.
        max_body: Largest accepted body in bytes (413 above).
        read_timeout_s: Time a client has to send its request (408 after).

    Raises:
        DataError: No token, and unauthenticated serving was not allowed on a loopback address.
    """
    if token is None and not (allow_unauthenticated and _is_loopback(host)):
        raise DataError(
            f"the alert receiver needs a token (--token-file or ${WEBHOOK_TOKEN_ENV}); "
            "--allow-unauthenticated is accepted on a loopback address only"
        )
    return AlertReceiver((host, port), ledger, start_run, token, max_body, read_timeout_s)
