"""The rollout controller: the loop that drives an InferenceService's canary to a decision.

Every ``--interval`` seconds one pass reads the InferenceService, reads the canary's registry
version off the predictor's storage URI (``.../versions/<n>/model``) and the stable one from the
registry's ``production`` alias, and, when a canary takes traffic, calls
:meth:`mlops.rollout.ClusterRollout.step` (analysis from Prometheus, then 10 -> 50 -> promoted
or rolled back to 0). It exports the state as ``flight_delay_rollout_state{model, version,
state}`` (1 for the current state, 0 for the others), which the ``FlightDelayCanaryRolledBack``
alert reads, and ``flight_delay_rollout_hold_seconds{model, version}``: how long the canary has
been held for missing evidence (0 when it is not held). A pass with no canary running sends
nothing to the API server.

Failure modes. Prometheus down, slow or answering garbage: the analysis holds (the pass itself
completes, the reason names the failed query) and the canary is rolled back once held for
``--max-hold-seconds``. API server slow or down: the read is retried with backoff
(``--kube-timeout`` per call), then the pass fails with nothing written; a patch whose answer is
lost is confirmed by a fresh read, or the pass fails and the next one starts again. Errors of a
pass (API server, registry) are logged and counted; the next pass tries again.

Run it as ``mlops rollout-controller`` (the chart's ``rolloutController`` Deployment).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from mlops import telemetry as T
from mlops.config import DEFAULT_MODEL_NAME
from mlops.registry import ModelRegistry
from mlops.rollout import (
    ClusterRollout,
    PrometheusClient,
    RolloutThresholds,
    ServiceState,
    StepResult,
)

log = logging.getLogger("mlops.rollout_controller")

NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_NAMESPACE = "flight-delay"
LAST_PASS = f"{T.PREFIX}_rollout_last_pass_timestamp_seconds"  # gauge{model}: last good pass
PASS_ERRORS = f"{T.PREFIX}_rollout_pass_errors"  # counter{model}: failed passes
HOLD_SECONDS = f"{T.PREFIX}_rollout_hold_seconds"  # gauge{model, version}: time held, 0 if not


class RolloutMetrics:
    """The controller's series, in a registry of their own (served on ``--metrics-port``)."""

    def __init__(self, model_name: str, registry: CollectorRegistry | None = None) -> None:
        self.model_name = model_name
        self.registry = registry or CollectorRegistry()
        self.state = Gauge(
            T.ROLLOUT_STATE, "1 for the rollout state of the served version, 0 for the others",
            ["model", "version", "state"], registry=self.registry,
        )  # fmt: skip
        self.last_pass = Gauge(
            LAST_PASS, "Unix time of the last pass that completed", ["model"],
            registry=self.registry,
        )  # fmt: skip
        self.errors = Counter(
            PASS_ERRORS, "Passes that failed (API server, Prometheus or registry errors)",
            ["model"], registry=self.registry,
        )  # fmt: skip
        self.errors.labels(model_name)  # exported as 0 from the start
        self.hold = Gauge(
            HOLD_SECONDS, "Seconds the canary has been held for missing evidence, 0 if not held",
            ["model", "version"], registry=self.registry,
        )  # fmt: skip
        self._version: str | None = None

    def set_state(self, version: int | None, state: str | None) -> None:
        """Export ``state`` for ``version``; a previous version's series are removed, so an old
        roll-back does not keep its alert firing once another version is served."""
        label = None if version is None or state is None else str(version)
        if self._version is not None and self._version != label:
            for s in T.ROLLOUT_STATES:
                self.state.remove(self.model_name, self._version, s)
            self.hold.remove(self.model_name, self._version)
        self._version = label
        if label is not None:
            for s in T.ROLLOUT_STATES:
                self.state.labels(self.model_name, label, s).set(1 if s == state else 0)
            if state != "canary":
                self.hold.labels(self.model_name, label).set(0)

    def set_hold(self, version: int, held_seconds: float) -> None:
        """Export how long ``version`` has been held (0: it is not held)."""
        self.hold.labels(self.model_name, str(version)).set(held_seconds)

    def pass_done(self) -> None:
        """Record a completed pass."""
        self.last_pass.labels(self.model_name).set(time.time())

    def pass_failed(self) -> None:
        """Count a failed pass."""
        self.errors.labels(self.model_name).inc()


@dataclass
class PassResult:
    """One pass: the state found, the step taken (if a canary ran) and the state after it."""

    before: ServiceState
    step: StepResult | None
    after: ServiceState


class RolloutController:
    """Runs passes of :class:`ClusterRollout` and exports their outcome.

    Args:
        rollout: The InferenceService, Prometheus and registry to work with.
        metrics: Where the state goes.
    """

    def __init__(self, rollout: ClusterRollout, metrics: RolloutMetrics) -> None:
        self.rollout = rollout
        self.metrics = metrics

    def run_once(self) -> PassResult:
        """One pass: read the state, step a running canary, export the state.

        Raises:
            Exception: Whatever the API server, Prometheus or the registry raised; nothing was
                exported for this pass.
        """
        obj = self.rollout.get()  # one read per pass; the patch is made against it
        before = self.rollout.state(obj)
        step = None
        after = before
        if before.canary_running:
            if before.production_version is None:
                log.warning(
                    "canary version %s runs but %s has no production version to compare with",
                    before.version, self.rollout.model_name,
                )  # fmt: skip
            else:
                assert before.version is not None  # canary_running implies a version
                step = self.rollout.step(before.version, before.production_version, obj)
                if step is None:
                    # The registry's production moved between the two reads; next pass sees it.
                    after = self.rollout.state()
                else:
                    after = ServiceState(before.version, step.traffic_percent,
                                         step.production_version)  # fmt: skip
                    held = self.rollout.held_seconds(before.version)
                    self.metrics.set_hold(
                        before.version, held if step.analysis.decision == "hold" and held else 0.0
                    )
                    log.info(
                        "canary %s: %s -> traffic %s (%s)", before.version,
                        step.analysis.decision, step.traffic_percent,
                        "; ".join(step.analysis.reasons),
                    )  # fmt: skip
        self.metrics.set_state(after.version, after.state)
        self.metrics.pass_done()
        return PassResult(before, step, after)

    def run_safely(self) -> PassResult | None:
        """:meth:`run_once`, with any error logged and counted instead of raised."""
        try:
            return self.run_once()
        except Exception:
            log.exception("rollout pass failed; trying again next interval")
            self.metrics.pass_failed()
            return None

    def run_forever(self, interval: float, stop: threading.Event) -> None:
        """Pass every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            self.run_safely()
            stop.wait(interval)


def pod_namespace(path: Path = NAMESPACE_FILE) -> str:
    """The pod's namespace from its service-account mount, else ``flight-delay``."""
    try:
        return path.read_text().strip() or DEFAULT_NAMESPACE
    except OSError:
        return DEFAULT_NAMESPACE


def _default(name: str) -> Any:
    """A rollout threshold's default, so the flags and the typed config agree."""
    return RolloutThresholds.model_fields[name].default


def add_rollout_controller_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``rollout-controller`` to the ``mlops`` subcommands."""
    p = sub.add_parser("rollout-controller", help="drive the InferenceService's canary")
    p.add_argument("--inference-service", default="flight-delay", help="InferenceService name")
    p.add_argument("--namespace", help="its namespace (default: the pod's, else flight-delay)")
    p.add_argument(
        "--prometheus-url", default="http://prometheus-operated.monitoring:9090",
        help="Prometheus that scrapes both revisions",
    )  # fmt: skip
    p.add_argument("--registry-uri", help="model registry (default: the config's)")
    p.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="registered model name")
    p.add_argument("--interval", type=float, default=60.0, help="seconds between passes")
    p.add_argument("--metrics-port", type=int, default=9100, help="port of /metrics (0: none)")
    p.add_argument("--metrics-host", default="0.0.0.0", help="address of /metrics")
    p.add_argument("--window", default=_default("window"), help="analysis window (PromQL)")
    p.add_argument(
        "--min-requests", type=int, default=_default("min_requests"),
        help="requests each version needs before a decision",
    )  # fmt: skip
    p.add_argument(
        "--min-slice-requests", type=int, default=_default("min_slice_requests"),
        help="predictions each version needs in every gated slice",
    )  # fmt: skip
    p.add_argument(
        "--max-hold-seconds", type=float, default=_default("max_hold_seconds"),
        help="roll back a canary held this long for missing evidence",
    )  # fmt: skip
    p.add_argument(
        "--prometheus-timeout", type=float, default=5.0,
        help="seconds per Prometheus query try (3 tries with backoff)",
    )  # fmt: skip
    p.add_argument(
        "--kube-timeout", type=float, default=10.0,
        help="seconds per Kubernetes API call (reads: 3 tries with backoff)",
    )  # fmt: skip
    p.add_argument("--once", action="store_true", help="one pass, then exit (1 if it failed)")


def cli_rollout_controller(args: argparse.Namespace, default_registry: str) -> int:
    """Run ``mlops rollout-controller``: in-cluster credentials, else the kubeconfig's."""
    from prometheus_client import start_http_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    rollout = ClusterRollout.from_kubeconfig(
        prom=PrometheusClient(args.prometheus_url, timeout=args.prometheus_timeout),
        registry=ModelRegistry(args.registry_uri or default_registry),
        name=args.inference_service,
        namespace=args.namespace or pod_namespace(),
        model_name=args.model_name,
        thresholds=RolloutThresholds(
            window=args.window, min_requests=args.min_requests,
            min_slice_requests=args.min_slice_requests, max_hold_seconds=args.max_hold_seconds,
        ),
        request_timeout=args.kube_timeout,
    )  # fmt: skip
    controller = RolloutController(rollout, RolloutMetrics(args.model_name))
    if args.metrics_port:
        start_http_server(
            args.metrics_port, args.metrics_host, registry=controller.metrics.registry
        )
    log.info(
        "rollout controller for %s/%s, Prometheus %s, every %ss", rollout.namespace,
        rollout.name, args.prometheus_url, args.interval,
    )  # fmt: skip
    if args.once:
        return 0 if controller.run_safely() is not None else 1
    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    controller.run_forever(args.interval, stop)
    return 0
