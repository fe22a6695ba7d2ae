"""The rollout controller end to end: the real kubernetes client, a real Prometheus, real servers.

The API side is a fake API server (tests/fake_kube_api.py) holding the InferenceService that
``helm template`` renders from the chart; the real ``kubernetes`` client talks to it over HTTP
(``Configuration(host=...)``, no kubeconfig). It enforces the rendered rollout Role and records
every request: the tests check each against the Role's rules and each object a patch produced
against the KServe SDK's types. The serving side is the real KServe model server serving each
registry version in its own process (as each predictor revision is its own pod), scraped by a
real Prometheus that also scrapes the controller's /metrics and evaluates the chart's alert rules.

The Prometheus URL and the served versions come from one fixture, ``backend``: replace it with
one that starts the chart's serving pods as containers and the tests stay as they are.
"""

from __future__ import annotations

import contextlib
import copy
import math
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fake_kube_api import MERGE_PATCH, FakeKubeAPI, allowed, attributes
from rollout_harness import parse, prometheus_with_rules, wait_for, with_status
from rollout_harness import rollout_role_rules as rollout_role_rules_of

from mlops import telemetry as T
from mlops.feast_ops import materialize
from mlops.kserve_types import validate_inference_service
from mlops.registry import ModelRegistry, version_from_uri
from mlops.rollout import (
    ISVC_PLURAL,
    ClusterRollout,
    PrometheusClient,
    RolloutThresholds,
    canary_patch,
    predictor_storage_uri,
)
from mlops.rollout_controller import RolloutController, RolloutMetrics
from mlops.shadow import free_port, post, replay_rows, server_process
from tools.k8s_validate import HELM, ROOT, render_chart

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
MODEL = "flight-delay"
NAMESPACE = "flight-delay"
WARMUP = 5
TrainingSet = Callable[[str, str], tuple[pd.DataFrame, pd.DataFrame]]


@dataclass
class Backend:
    """What the controller reads besides the API server.

    Attributes:
        prometheus_url: The Prometheus that scrapes every served version and the controller.
        registry: The model registry; ``production`` starts at ``versions["stable"]``.
        versions: Registry versions by role: ``stable``, ``good`` and ``bad`` candidates.
        controller_metrics_port: Where the controller must serve /metrics to be scraped.
        replay: ``replay((v1, v2), n)`` sends ``n`` held-out flights to each served version and
            returns once Prometheus has scraped them.
    """

    prometheus_url: str
    registry: ModelRegistry
    versions: dict[str, int]
    controller_metrics_port: int
    replay: Callable[[tuple[int, ...], int], None]

    @staticmethod
    def storage_uri(version: int) -> str:
        """The version's model as KServe reads it from the chart's registry PVC."""
        return f"pvc://flight-delay-registry/{MODEL}/versions/{version}/model"


@contextlib.contextmanager
def _server(model_dir: Path, feature_repo: Path, log: Path) -> Iterator[str]:
    """The real model server for one version (named ``flight-delay`` as in the cluster)."""
    port = free_port()
    cmd = [sys.executable, "-m", "serving.transformer", f"--model_name={MODEL}",
           f"--model_dir={model_dir}", f"--feast_repo={feature_repo}",
           f"--http_port={port}"]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with server_process(cmd, f"{base}/v2/models/{MODEL}/ready", log):
        yield base


@pytest.fixture(scope="module")
def backend(prepared_repo: Path, training_set: TrainingSet,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:  # fmt: skip
    """Real model servers of three registry versions and a real Prometheus scraping them."""
    from model_fixtures import rollout_versions

    materialize(prepared_repo, datetime(2012, 12, 1, tzinfo=UTC), datetime(2013, 2, 1, tzinfo=UTC))
    work = tmp_path_factory.mktemp("rollout-controller")
    registry, versions = rollout_versions(work, MODEL)
    _, evaluation = training_set("2013-01", "2013-01")
    rows = replay_rows(evaluation.sample(320, random_state=3), 320)
    with contextlib.ExitStack() as stack:
        servers = {
            v: stack.enter_context(_server(registry.get(MODEL, v).local_model_path,
                                           prepared_repo, work / f"server-{v}.log"))
            for v in versions.values()
        }  # fmt: skip
        controller_port = free_port()
        targets = [s.removeprefix("http://") for s in servers.values()]
        controller = f"127.0.0.1:{controller_port}"
        prom = stack.enter_context(prometheus_with_rules(targets, controller, work))

        def seen(version: int) -> str:
            return f'sum({T.REQUESTS}{{model="{MODEL}",version="{version}"}})'

        def replay(served: tuple[int, ...], n: int) -> None:
            before = {v: prom.scalar(seen(v)) for v in served}
            before = {v: 0.0 if math.isnan(c) else c for v, c in before.items()}
            for i, inst in enumerate(rows[:n]):
                for v in served:
                    post(f"{servers[v]}/v1/models/{MODEL}:predict", {"instances": [inst]})
                if i == WARMUP - 1:
                    # Counters appear at their first request: let Prometheus scrape a first
                    # sample, so increase() over the window counts the rest.
                    for v in served:
                        wait_for(prom, seen(v), lambda c, v=v: c >= before[v] + WARMUP, "warm-up")
            for v in served:
                wait_for(prom, seen(v), lambda c, v=v: c >= before[v] + n, "replayed requests")
            time.sleep(2)  # two more scrapes after the last request

        yield Backend(prom.url, registry, versions, controller_port, replay)


@pytest.fixture(scope="module")
def chart_isvc() -> dict[str, Any]:
    """The chart's InferenceService as the API server would hold it after ``helm install``."""
    if not HELM.exists():
        subprocess.run(["bash", str(ROOT / "tools" / "install-helm.sh")], check=True)
    (isvc,) = [d for d in parse(render_chart()) if d["kind"] == "InferenceService"]
    return with_status(isvc)


@pytest.fixture(scope="module")
def rollout_role_rules() -> list[dict[str, Any]]:
    """The rules of the rollout Role the chart renders."""
    return rollout_role_rules_of(parse(render_chart()))


@pytest.fixture(scope="module")
def cluster(backend: Backend, chart_isvc: dict, rollout_role_rules: list) -> Iterator[dict]:
    """The fake API server with the chart's InferenceService serving the stable version, and the
    controller (real kubernetes client) with its /metrics where Prometheus scrapes it."""
    from kubernetes import client
    from prometheus_client import start_http_server

    isvc = canary_patch(chart_isvc, backend.storage_uri(backend.versions["stable"]), None)
    api = FakeKubeAPI(rules=rollout_role_rules)
    path = api.put_object(isvc, ISVC_PLURAL)
    with api.serve():
        custom = client.CustomObjectsApi(client.ApiClient(client.Configuration(host=api.url)))
        prom = PrometheusClient(backend.prometheus_url)
        # Separate processes on a shared 2-core machine: latency is not what is under test.
        # 160 replayed flights a round: a slice at the gating share (5 %) has about 8.
        th = RolloutThresholds(window="5m", min_requests=100, min_slice_requests=5,
                               max_p99_ratio=4.0, max_p99_seconds=1.0)  # fmt: skip
        rollout = ClusterRollout(custom, prom, backend.registry, MODEL, NAMESPACE, MODEL, th)
        controller = RolloutController(rollout, RolloutMetrics(MODEL))
        server, thread = start_http_server(backend.controller_metrics_port, "127.0.0.1",
                                           registry=controller.metrics.registry)  # fmt: skip
        try:
            yield {"api": api, "path": path, "controller": controller, "prom": prom}
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


def _predictor(api: FakeKubeAPI, path: str) -> dict[str, Any]:
    return dict(api.object(path)["spec"]["predictor"])


def _stray_pass_sends_nothing(cluster: dict) -> None:
    api, controller = cluster["api"], cluster["controller"]
    before = len(api.patches())
    result = controller.run_once()
    assert result.step is None and not result.before.canary_running
    assert len(api.patches()) == before


def test_a_pass_without_a_canary_sends_no_patch(backend: Backend, cluster: dict) -> None:
    _stray_pass_sends_nothing(cluster)
    assert [r.method for r in cluster["api"].requests] == ["GET"]
    stable = str(backend.versions["stable"])
    wait_for(
        cluster["prom"],
        f'{T.ROLLOUT_STATE}{{version="{stable}",state="promoted"}}',
        lambda v: v == 1,
        "controller's state scraped",
    )


def test_good_candidate_goes_10_50_promoted(backend: Backend, cluster: dict) -> None:
    api, path, controller = cluster["api"], cluster["path"], cluster["controller"]
    good, stable = backend.versions["good"], backend.versions["stable"]
    # What the deploy step does, through the same client and Role.
    controller.rollout.start(good, backend.storage_uri(good))
    assert _predictor(api, path)["canaryTrafficPercent"] == 10
    assert version_from_uri(predictor_storage_uri(api.object(path)) or "") == good

    backend.replay((stable, good), 160)
    first = controller.run_once()
    assert first.step is not None, first
    assert first.step.analysis.decision == "promote", first.step.analysis.reasons
    assert _predictor(api, path)["canaryTrafficPercent"] == 50
    second = controller.run_once()
    assert second.step is not None and second.step.analysis.decision == "promote"
    assert "canaryTrafficPercent" not in _predictor(api, path)
    assert backend.registry.resolve(MODEL, "production").version == good
    assert second.after.state == "promoted"
    wait_for(
        cluster["prom"],
        f'{T.ROLLOUT_STATE}{{version="{good}",state="promoted"}}',
        lambda v: v == 1,
        "promoted state scraped",
    )
    # Promotion removed the field with a merge patch's null.
    last = api.patches()[-1]
    assert last.body["spec"]["predictor"]["canaryTrafficPercent"] is None
    _stray_pass_sends_nothing(cluster)


def test_bad_candidate_is_rolled_back_and_the_alert_fires(backend: Backend, cluster: dict) -> None:
    api, path, controller = cluster["api"], cluster["path"], cluster["controller"]
    good, bad = backend.versions["good"], backend.versions["bad"]
    if backend.registry.resolve(MODEL, "production").version != good:
        pytest.skip("needs the good candidate promoted first")
    controller.rollout.start(bad, backend.storage_uri(bad))
    backend.replay((good, bad), 160)
    result = controller.run_once()
    assert result.step is not None and result.step.analysis.decision == "rollback"
    assert any(r.startswith("slice carrier=UA") for r in result.step.analysis.reasons)
    assert _predictor(api, path)["canaryTrafficPercent"] == 0
    assert backend.registry.resolve(MODEL, "production").version == good
    assert result.after.state == "rolled_back"
    metrics = controller.metrics.registry
    assert metrics.get_sample_value(T.ROLLOUT_STATE, {"model": MODEL, "version": str(bad),
                                                      "state": "rolled_back"}) == 1  # fmt: skip

    prom = cluster["prom"]
    expr = f'{T.ROLLOUT_STATE}{{state="rolled_back"}} == 1'
    wait_for(prom, expr, lambda v: v == 1, "alert expression true")
    assert [s["metric"]["version"] for s in prom.query(expr)] == [str(bad)]
    wait_for(
        prom,
        'ALERTS{alertname="FlightDelayCanaryRolledBack",alertstate="firing"}',
        lambda v: v == 1,
        "FlightDelayCanaryRolledBack firing",
        timeout_s=30,
    )

    # A rolled-back canary (traffic 0) is left alone: no restart, no patch.
    _stray_pass_sends_nothing(cluster)
    assert _predictor(api, path)["canaryTrafficPercent"] == 0


def test_every_request_is_allowed_by_the_rollout_role_and_every_object_is_valid(
    cluster: dict, rollout_role_rules: list
) -> None:
    api = cluster["api"]
    assert api.requests, "no request recorded"
    for req in api.requests:
        attrs = attributes(req.method, req.path, req.query)
        assert allowed(rollout_role_rules, attrs), (req.method, req.path, attrs)
        assert req.method in ("GET", "PATCH"), req  # never a PUT (update), POST or DELETE
    patches = api.patches()
    assert len(patches) >= 5  # start, 50, promote, start, roll back
    for req in patches:
        assert req.content_type == MERGE_PATCH, req.content_type
        assert "status" not in req.body  # the status is KServe's, never written back
        assert req.body["metadata"]["resourceVersion"]  # optimistic concurrency
    assert len(api.history) == len(patches)
    for obj in api.history:
        validate_inference_service(obj)
    # The chart's predictor kept its custom container; only the env and the traffic moved.
    final = api.object(cluster["path"])
    assert final["spec"]["predictor"]["containers"][0]["name"] == "kserve-container"
    assert "storageUri" not in final["spec"]["predictor"]


def test_a_stale_read_is_refused_with_409_and_nothing_changes(cluster: dict) -> None:
    from kubernetes.client.exceptions import ApiException

    api, path, controller = cluster["api"], cluster["path"], cluster["controller"]
    stale = controller.rollout.get()
    api.put_object(copy.deepcopy(api.object(path)), ISVC_PLURAL)  # someone else wrote it
    current = api.object(path)
    with pytest.raises(ApiException) as err:
        controller.rollout._patch(stale, canary_patch(stale, None, 10))
    assert err.value.status == 409
    assert api.object(path) == current
    # A PUT is refused by the Role before the server even looks at it.
    with pytest.raises(ApiException) as err:
        controller.rollout.api.replace_namespaced_custom_object(
            "serving.kserve.io", "v1beta1", NAMESPACE, ISVC_PLURAL, MODEL, current)  # fmt: skip
    assert err.value.status == 403
