"""Timeouts and bounded retries of the rollout's outbound calls, against real HTTP servers.

Prometheus: a real ``http.server`` stands in for a Prometheus that is down, slow, answers 5xx or
garbage; :class:`mlops.rollout.PrometheusClient` must give up within its tries and the analysis
must hold. Kubernetes: the fake API server (tests/fake_kube_api.py) made slow or failing, talked
to by the real ``kubernetes`` client.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fake_kube_api import FakeKubeAPI

from mlops.registry import Lineage, ModelRegistry
from mlops.rollout import (
    ISVC_PLURAL,
    ClusterRollout,
    KubeUnconfirmedWrite,
    PrometheusClient,
    PrometheusError,
    RolloutThresholds,
    analyze,
    selector,
)
from mlops.rollout_controller import PASS_ERRORS, RolloutController, RolloutMetrics
from mlops.shadow import free_port

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]

MODEL = "flight-delay"
URI = "pvc://flight-delay-registry/flight-delay/versions/{}/model"
VECTOR = {"status": "success", "data": {"resultType": "vector", "result": [
    {"metric": {}, "value": [1700000000, "42"]}]}}  # fmt: skip
Answer = Callable[[int], tuple[int, bytes, float]]  # request number -> status, body, delay


@contextmanager
def http_stand_in(answer: Answer) -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server answering every GET with ``answer(n)``; yields its URL and the paths
    it was asked for."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            status, body, delay = answer(len(seen))
            time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up first

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _client(url: str) -> PrometheusClient:
    return PrometheusClient(url, timeout=0.3, attempts=3, backoff=0.1)


# -- Prometheus ---------------------------------------------------------------------------------


def test_prometheus_500_is_retried_with_backoff_then_raises() -> None:
    with http_stand_in(lambda n: (500, b'{"status":"error"}', 0.0)) as (url, seen):
        start = time.monotonic()
        with pytest.raises(PrometheusError, match=r"failed 3 tries \(HTTP 500\)"):
            _client(url).scalar("up")
        elapsed = time.monotonic() - start
    assert len(seen) == 3
    assert elapsed >= 0.3  # backoff 0.1 then 0.2


def test_prometheus_garbage_is_retried_then_raises_without_echoing_it() -> None:
    garbage = http_stand_in(lambda n: (200, b"<html>proxy error</html>", 0.0))
    with garbage as (url, seen), pytest.raises(PrometheusError) as err:
        _client(url).query("up")
    assert len(seen) == 3
    assert "not a Prometheus answer (JSONDecodeError)" in str(err.value)
    assert "<html>" not in str(err.value)


@pytest.mark.parametrize(
    "body",
    [
        {"status": "success", "data": {"resultType": "matrix", "result": []}},
        {"status": "success", "data": {"resultType": "vector", "result": [{"value": [0, "x"]}]}},
        {"status": "success", "data": {"resultType": "vector", "result": {"a": 1}}},
        {"status": "error", "error": "overloaded"},
        [1, 2],
    ],
)
def test_prometheus_answers_that_are_not_a_vector_are_refused(body: Any) -> None:
    answer = http_stand_in(lambda n: (200, json.dumps(body).encode(), 0.0))
    with answer as (url, seen), pytest.raises(PrometheusError, match="failed 3 tries"):
        _client(url).query("up")
    assert len(seen) == 3


def test_a_slow_prometheus_times_out_within_the_tries() -> None:
    with http_stand_in(lambda n: (200, json.dumps(VECTOR).encode(), 3.0)) as (url, seen):
        start = time.monotonic()
        with pytest.raises(PrometheusError, match="timed out"):
            _client(url).query("up")
        elapsed = time.monotonic() - start
    assert len(seen) == 3
    assert elapsed < 2.0  # 3 x 0.3 s + 0.3 s of backoff, not 3 x 3 s


def test_a_dead_prometheus_raises_naming_the_connection_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(PrometheusError, match=r"failed 3 tries \(URLError: \[Errno 111\]"):
        _client(url).query("up")


def test_prometheus_recovering_within_the_tries_answers() -> None:
    def answer(n: int) -> tuple[int, bytes, float]:
        return (503, b"", 0.0) if n < 3 else (200, json.dumps(VECTOR).encode(), 0.0)

    with http_stand_in(answer) as (url, seen):
        assert _client(url).scalar("up") == 42.0
    assert len(seen) == 3


def test_a_refused_query_is_not_retried() -> None:
    body = b'{"status":"error","errorType":"bad_data","error":"parse error at char 4"}'
    refusing = http_stand_in(lambda n: (400, body, 0.0))
    with refusing as (url, seen), pytest.raises(PrometheusError, match=r"HTTP 400: parse error"):
        _client(url).query("up((")
    assert len(seen) == 1


def test_analysis_against_a_failing_prometheus_holds_naming_it() -> None:
    with http_stand_in(lambda n: (500, b"", 0.0)) as (url, _):
        a = analyze(_client(url), selector(MODEL, "2"), selector(MODEL, "1"), RolloutThresholds())
    assert a.decision == "hold"
    (reason,) = a.reasons
    assert reason.startswith(f"no evidence: Prometheus at {url} failed 3 tries (HTTP 500)")
    assert a.canary.version == "2" and a.stable.version == "1"
    json.dumps(a.to_dict(), allow_nan=False)  # the lineage event is valid JSON (no NaN)


# -- Kubernetes API -------------------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    reg = ModelRegistry(str(tmp_path / "registry"))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "saved_model.pb").write_bytes(b"x")
    for _ in range(2):
        reg.register(MODEL, tmp_path / "m", Lineage(blessed=True), {})
    reg.set_alias(MODEL, "production", 1)
    return reg


@pytest.fixture
def kube(registry: ModelRegistry) -> Iterator[tuple[FakeKubeAPI, str, ClusterRollout]]:
    """The fake API server holding an InferenceService on version 1, and a rollout talking to it
    through the real kubernetes client (its urllib3 retries off, as ``from_kubeconfig`` sets)."""
    from kubernetes import client

    isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": MODEL, "namespace": MODEL},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "tensorflow"},
                                             "storageUri": URI.format(1)}}}}  # fmt: skip
    api = FakeKubeAPI()
    path = api.put_object(isvc, ISVC_PLURAL)
    with api.serve():
        configuration = client.Configuration(host=api.url)
        configuration.retries = 0
        custom = client.CustomObjectsApi(client.ApiClient(configuration))
        # Prometheus is down: every analysis holds, which is not what these tests look at.
        prom = PrometheusClient(f"http://127.0.0.1:{free_port()}", attempts=1)
        rollout = ClusterRollout(
            custom, prom, registry, MODEL, MODEL, MODEL, RolloutThresholds(),
            request_timeout=0.3, backoff=0.05,
        )  # fmt: skip
        yield api, path, rollout


def test_a_slow_api_server_fails_the_pass_after_retried_reads_and_writes_nothing(kube) -> None:
    api, _, rollout = kube
    rollout.start(2, URI.format(2))
    controller = RolloutController(rollout, RolloutMetrics(MODEL))
    api.delays["GET"] = 1.0
    requests = len(api.requests)
    start = time.monotonic()
    assert controller.run_safely() is None
    assert time.monotonic() - start < 3.0  # 3 x 0.3 s + backoff, not 3 x 1 s
    assert [r.method for r in api.requests[requests:]] == ["GET"] * 3
    errors = controller.metrics.registry.get_sample_value(f"{PASS_ERRORS}_total", {"model": MODEL})
    assert errors == 1
    # The next pass, with the server answering again, reads and goes on.
    api.delays.clear()
    result = controller.run_safely()
    assert result is not None and result.step is not None
    assert result.step.analysis.decision == "hold"
    assert len(api.patches()) == 1  # the start only


def test_reads_answered_503_are_retried(kube) -> None:
    api, _, rollout = kube
    api.failures["GET"] = 2
    assert rollout.get()["metadata"]["name"] == MODEL
    assert [r.method for r in api.requests] == ["GET"] * 3
    api.failures["GET"] = 3
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as err:
        rollout.get()
    assert err.value.status == 503


def test_a_patch_answered_late_is_confirmed_by_a_fresh_read_and_not_resent(kube) -> None:
    api, path, rollout = kube
    api.delays["PATCH"] = 1.0  # applied, answered after the client's 0.3 s
    rollout.start(2, URI.format(2))
    assert len(api.patches()) == 1
    assert api.object(path)["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert rollout.registry.lineage(MODEL, 2).events[-1]["kind"] == "canary_started"


def test_a_failed_patch_is_not_resent_and_raises(kube) -> None:
    api, path, rollout = kube
    before = api.object(path)
    api.failures["PATCH"] = 1
    with pytest.raises(KubeUnconfirmedWrite, match="the next pass reads it again"):
        rollout.start(2, URI.format(2))
    assert len(api.patches()) == 1
    assert api.object(path) == before
    assert rollout.registry.lineage(MODEL, 2).events[-1]["kind"] != "canary_started"
