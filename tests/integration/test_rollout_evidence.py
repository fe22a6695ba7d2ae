"""Missing evidence never promotes, read from a real Prometheus.

A real ``prometheus_client`` exporter serves the serving metrics of three versions: the stable
one (1) complete, a canary (2) without a latency series and without one slice, a good canary (3)
complete. A real Prometheus scrapes it every second. The controller drives the fake API server
(tests/fake_kube_api.py) through the real kubernetes client; Prometheus is then stopped in the
middle of the rollout: the canary holds, and is rolled back only once held past the time limit.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_kube_api import FakeKubeAPI
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from rollout_harness import wait_for

from mlops import telemetry as T
from mlops.registry import Lineage, ModelRegistry
from mlops.rollout import (
    ISVC_PLURAL,
    ClusterRollout,
    PrometheusClient,
    RolloutThresholds,
    analyze,
    selector,
)
from mlops.rollout_controller import HOLD_SECONDS, RolloutController, RolloutMetrics
from mlops.shadow import free_port, prometheus
from tools.k8s_validate import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MODEL = "flight-delay"
URI = "pvc://flight-delay-registry/flight-delay/versions/{}/model"
SLICES = (("carrier", "UA"), ("carrier", "other"), ("origin", "JFK"))
TH = RolloutThresholds(min_requests=50, min_slice_requests=10, max_hold_seconds=3.0)


class Exporter:
    """The serving series of several versions, as the model server exports them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["model", "version"]
        self.requests = Counter(T.REQUESTS, "requests", [*labels, "protocol"],
                                registry=self.registry)  # fmt: skip
        self.latency = Histogram(T.STAGE_LATENCY, "latency", [*labels, "stage"],
                                 registry=self.registry)  # fmt: skip
        self.predictions = Counter(T.PREDICTIONS, "predictions",
                                   [*labels, "slice_key", "slice_value", "outcome"],
                                   registry=self.registry)  # fmt: skip
        self.score = Histogram(T.PREDICTION_SCORE, "score", [*labels, "slice_key", "slice_value"],
                               registry=self.registry)  # fmt: skip

    def serve(self, version: str, n: int, latency: bool = True,
              slices: tuple[tuple[str, str], ...] = SLICES) -> None:  # fmt: skip
        """Count ``n`` requests of ``version`` (0 creates the series)."""
        self.requests.labels(MODEL, version, "v1").inc(n)
        for i in range(n):
            if latency:
                self.latency.labels(MODEL, version, "total").observe(0.01)
            for key, value in slices:
                if key == "carrier" and (value == "UA") != (i % 2 == 0):
                    continue  # half UA, half other
                outcome = "positive" if i % 5 == 0 else "negative"
                self.predictions.labels(MODEL, version, key, value, outcome).inc()
                self.score.labels(MODEL, version, key, value).observe(0.2)
        if n == 0:
            for key, value in slices:
                for outcome in ("positive", "negative"):
                    self.predictions.labels(MODEL, version, key, value, outcome)
                self.score.labels(MODEL, version, key, value)
            if latency:
                self.latency.labels(MODEL, version, "total")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The exporter with versions 1 (stable), 2 (no latency, no UA slice), 3 (good), scraped by
    a real Prometheus that the test may stop."""
    if shutil.which("prometheus") is None:
        subprocess.run(["bash", str(ROOT / "tools" / "install-prometheus.sh")], check=True)
    exporter = Exporter()
    broken = dict(latency=False, slices=SLICES[1:])
    exporter.serve("1", 0)
    exporter.serve("2", 0, **broken)  # type: ignore[arg-type]
    exporter.serve("3", 0)
    port = free_port()
    server, thread = start_http_server(port, "127.0.0.1", registry=exporter.registry)
    work = tmp_path_factory.mktemp("evidence")
    with contextlib.ExitStack() as stack:
        prom = stack.enter_context(prometheus(f"127.0.0.1:{port}", work))
        # A first sample of every series before the requests, so increase() counts them all.
        for v in ("1", "2", "3"):
            wait_for(prom, f'{T.REQUESTS}{{version="{v}"}}', lambda c: c == 0, "first scrape")
        exporter.serve("1", 200)
        exporter.serve("2", 200, **broken)  # type: ignore[arg-type]
        exporter.serve("3", 200)
        for v in ("1", "2", "3"):
            wait_for(prom, f'{T.REQUESTS}{{version="{v}"}}', lambda c: c == 200, "requests")
        time.sleep(2)  # two more scrapes
        yield {"prom": prom, "stop": stack.close}
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_no_latency_series_and_a_missing_slice_hold_naming_them(served: dict) -> None:
    prom = served["prom"]
    a = analyze(prom, selector(MODEL, "2"), selector(MODEL, "1"), TH)
    assert a.decision == "hold", a.reasons
    assert a.canary.requests >= TH.min_requests  # enough traffic: the gaps are what holds it
    assert a.reasons == [
        f"missing evidence: canary version 2 has no p99 latency ({T.STAGE_LATENCY} stage=total)",
        "missing evidence: canary version 2 has no predictions in slice carrier=UA",
    ]
    good = analyze(prom, selector(MODEL, "3"), selector(MODEL, "1"), TH)
    assert good.decision == "promote", good.reasons
    assert good.reasons[0].endswith("3 slices compared")


def test_prometheus_down_mid_rollout_holds_then_rolls_back_after_the_limit(
    served: dict, tmp_path: Path
) -> None:
    from kubernetes import client

    registry = ModelRegistry(str(tmp_path / "registry"))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "saved_model.pb").write_bytes(b"x")
    for _ in range(3):
        registry.register(MODEL, tmp_path / "m", Lineage(blessed=True), {})
    registry.set_alias(MODEL, "production", 1)
    isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": MODEL, "namespace": MODEL},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "tensorflow"},
                                             "storageUri": URI.format(1)}}}}  # fmt: skip
    api = FakeKubeAPI()
    path = api.put_object(isvc, ISVC_PLURAL)
    with api.serve():
        custom = client.CustomObjectsApi(client.ApiClient(client.Configuration(host=api.url)))
        prom = PrometheusClient(served["prom"].url, timeout=1.0, attempts=2, backoff=0.1)
        rollout = ClusterRollout(custom, prom, registry, MODEL, MODEL, MODEL, TH)
        controller = RolloutController(rollout, RolloutMetrics(MODEL))
        rollout.start(3, URI.format(3))

        first = controller.run_once()
        assert first.step is not None and first.step.analysis.decision == "promote"
        assert api.object(path)["spec"]["predictor"]["canaryTrafficPercent"] == 50

        served["stop"]()  # Prometheus goes away during the rollout
        held = controller.run_once()
        assert held.step is not None and held.step.analysis.decision == "hold"
        (reason,) = held.step.analysis.reasons
        assert reason.startswith(f"no evidence: Prometheus at {prom.url} failed 2 tries")
        assert api.object(path)["spec"]["predictor"]["canaryTrafficPercent"] == 50
        hold = {"model": MODEL, "version": "3"}
        assert 0 < controller.metrics.registry.get_sample_value(HOLD_SECONDS, hold) < 1

        time.sleep(1.5)
        still = controller.run_once()  # held, under the limit: nothing written
        assert still.step is not None and still.step.analysis.decision == "hold"
        assert controller.metrics.registry.get_sample_value(HOLD_SECONDS, hold) >= 1.5
        assert len(api.patches()) == 2

        time.sleep(TH.max_hold_seconds - 1.0)
        rolled = controller.run_once()
        assert rolled.step is not None and rolled.step.analysis.decision == "rollback"
        assert "over the limit of 3 s, without the evidence to promote" in (
            rolled.step.analysis.reasons[0])  # fmt: skip
        assert api.object(path)["spec"]["predictor"]["canaryTrafficPercent"] == 0
        assert rolled.after.state == "rolled_back"
    assert registry.resolve(MODEL, "production").version == 1
    kinds = [e["kind"] for e in registry.lineage(MODEL, 3).events]
    assert kinds[-4:] == ["canary_started", "canary_traffic_raised", "canary_held", "rolled_back"]
