"""The rollout controller against the chart's serving pods as containers.

The API side is the fake API server (tests/fake_kube_api.py) holding the InferenceService the
pods were started from, with the chart's rollout Role enforced; the controller talks to it with
the real ``kubernetes`` client. What KServe and Knative do on each change of that object is
done here from the object itself: a changed STORAGE_URI starts a predictor revision pod built
from the patched InferenceService (``serving_pods.predictor_pod``), and ``canaryTrafficPercent``
sets the weights of the route between revisions (``knative_route``). Requests go through the
transformer pod; a real Prometheus scrapes the transformer, every predictor revision and the
controller, and evaluates the chart's alert rules.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fake_kube_api import FakeKubeAPI
from kfp_podman import MODEL, REGISTRY_CLAIM, ContainerRun
from rollout_harness import prometheus_with_rules, rollout_role_rules, wait_for, with_status
from serving_pods import answers, by_kind, logs, play, predictor_pod, render

from mlops import features as F
from mlops import telemetry as T
from mlops.registry import Lineage, ModelRegistry, serving_uri, version_from_uri
from mlops.rollout import (
    ISVC_PLURAL,
    ClusterRollout,
    PrometheusClient,
    RolloutThresholds,
    predictor_storage_uri,
)
from mlops.rollout_controller import PassResult, RolloutController, RolloutMetrics
from mlops.shadow import free_port, replay_rows

pytestmark = [pytest.mark.containers, pytest.mark.timeout(1800)]
NAMESPACE = "flight-delay"
BATCH = 400  # requests per analysis round through the transformer


@dataclass
class Cluster:
    """The fake API server, the controller, and the pods KServe would be running."""

    api: FakeKubeAPI
    path: str
    controller: RolloutController
    prom: PrometheusClient
    registry: ModelRegistry
    pods: Any
    versions: dict[str, int]
    # Every revision's port, fixed up front so Prometheus scrapes them all from the start.
    ports: dict[int, int]
    started: set[int]
    work: Path
    played: list[Path] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    controller_port: int = 0  # /metrics of the chart's controller Deployment run as a pod

    def reconcile(self) -> None:
        """What KServe + Knative do with the object: revision pods and the traffic split."""
        obj = self.api.object(self.path)
        version = version_from_uri(predictor_storage_uri(obj) or "")
        assert version is not None
        if version not in self.started:
            self.started.add(version)
            pod = predictor_pod(obj, self.ports[version], self.pods.claims, revision=f"v{version}")
            podset = type(self.pods.podset)(pods=[pod])
            self.played.append(play(podset, self.pods.claims, self.work, f"predictor-v{version}"))
            url = f"http://127.0.0.1:{self.ports[version]}/v2/models/{MODEL}/ready"
            deadline = time.monotonic() + 240
            while not answers(url):
                assert time.monotonic() < deadline, logs(podset)
                time.sleep(1)
        stable = self.registry.resolve(MODEL, "production").version
        canary = obj["spec"]["predictor"].get("canaryTrafficPercent")
        if canary is None:  # promoted, or never a canary: all traffic to the latest revision
            weights = {version: 100}
        else:
            weights = {stable: 100 - int(canary), version: int(canary)}
        self.pods.route.set({f"127.0.0.1:{self.ports[v]}": w for v, w in weights.items()})

    def replay(self, n: int) -> None:
        """``n`` single-flight requests through the transformer pod, 4 at a time."""
        url = f"{self.pods.base}/v1/models/{MODEL}:predict"

        def one(i: int) -> int:
            body = json.dumps({"instances": [self.rows[i % len(self.rows)]]}).encode()
            req = urllib.request.Request(url, body, {"content-type": "application/json"})
            # A client honours the server's 503 + Retry-After (a revision pod just routed to, on
            # a loaded machine, can still be starting); a pod that stays down fails all tries.
            for attempt in range(3):
                try:
                    with urllib.request.urlopen(req, timeout=30) as r:
                        return int(r.status)
                except urllib.error.HTTPError as err:
                    if err.code != 503 or attempt == 2:
                        raise
                    time.sleep(float(err.headers.get("Retry-After") or 1))
            raise AssertionError("unreachable")

        with ThreadPoolExecutor(4) as pool:
            assert set(pool.map(one, range(n))) == {200}
        time.sleep(3)  # a few scrapes after the last request

    def step(self, rounds: int = 4) -> PassResult:
        """Replay and run the controller until it decides something other than hold."""
        for _ in range(rounds):
            self.replay(BATCH)
            result = self.controller.run_once()
            assert result.step is not None, result
            self.reconcile()
            if result.step.analysis.decision != "hold":
                return result
        return result


@pytest.fixture(scope="module")
def cluster(pods: Any, container_run: ContainerRun) -> Iterator[Cluster]:
    from kubernetes import client
    from model_fixtures import export_logistic_model
    from prometheus_client import start_http_server
    from serving_pods import down

    work = pods.work / "rollout"
    work.mkdir()
    registry = ModelRegistry(str(container_run.registry))
    stable = int(pods.version)
    # The first model: the deploy step makes it production.
    registry.set_alias(MODEL, "production", stable, reason="first model")
    first = registry.get(MODEL, stable).local_model_path
    lineage = Lineage(spans=["2013-01"], blessed=True, blessing_reasons=["test fixture"])
    # Same weights as production: a retrain that changed nothing must be promoted.
    good = registry.register(MODEL, first, lineage, {"fixture": "good"}).version
    # Passed offline evaluation, but its United flights' scores jump online.
    bad_dir = export_logistic_model(work / "m-bad", carrier_bonus={"UA": 3.0})
    bad = registry.register(MODEL, bad_dir, lineage, {"fixture": "bad"}).version

    (isvc,) = by_kind(pods.objects, "InferenceService")
    api = FakeKubeAPI(rules=rollout_role_rules(pods.objects))
    path = api.put_object(with_status(isvc), ISVC_PLURAL)
    flights = pd.read_parquet(container_run.repo / "data" / "flights.parquet")
    january = flights[flights[F.EVENT_TIMESTAMP].dt.month == 1].sample(300, random_state=3)
    ports = {stable: pods.ports["predictor"]} | {v: free_port() for v in (good, bad)}
    controller_port, pod_controller_port = free_port(), free_port()
    targets = [f"127.0.0.1:{p}" for p in (pods.ports["transformer"], *ports.values())]
    # The chart's controller Deployment, started as a pod by the last test, is scraped too.
    targets.append(f"127.0.0.1:{pod_controller_port}")
    with api.serve(), prometheus_with_rules(targets, f"127.0.0.1:{controller_port}", work) as prom:
        custom = client.CustomObjectsApi(client.ApiClient(client.Configuration(host=api.url)))
        # Four containers and Prometheus on a shared 2-core machine, and a new revision's first
        # TensorFlow calls are slow (measured here: canary p99 0.7 s against stable 0.1 s):
        # latency is not what is under test, the ratio only catches a hung canary. About 40
        # canary requests a round give a 5 % slice ~2, hence the small per-slice minimum.
        th = RolloutThresholds(window="5m", min_requests=30, max_p99_ratio=20.0,
                               max_p99_seconds=3.0, min_slice_requests=3)  # fmt: skip
        rollout = ClusterRollout(custom, prom, registry, MODEL, NAMESPACE, MODEL, th)
        controller = RolloutController(rollout, RolloutMetrics(MODEL))
        server, thread = start_http_server(controller_port, "127.0.0.1",
                                           registry=controller.metrics.registry)  # fmt: skip
        versions = {"stable": stable, "good": good, "bad": bad}
        env = Cluster(api, path, controller, prom, registry, pods, versions, ports, {stable},
                      work, rows=replay_rows(january, 300),
                      controller_port=pod_controller_port)  # fmt: skip
        try:
            yield env
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            for kube in reversed(env.played):
                down(kube, set())
            pods.route.set({f"127.0.0.1:{pods.ports['predictor']}": 100})


def _start_canary(env: Cluster, version: int) -> None:
    """What the deploy step does: point the canary at the version, 10 % of traffic."""
    root = f"pvc://{REGISTRY_CLAIM}"  # what the deploy step's registry_serving_root names
    env.controller.rollout.start(version, serving_uri(env.registry.get(MODEL, version), root))
    env.reconcile()


def test_good_candidate_goes_10_50_promoted_on_the_pods(cluster: Cluster) -> None:
    env, good = cluster, cluster.versions["good"]
    _start_canary(env, good)
    predictor = env.api.object(env.path)["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 10
    first = env.step()
    assert first.step is not None and first.step.analysis.decision == "promote", first
    assert env.api.object(env.path)["spec"]["predictor"]["canaryTrafficPercent"] == 50
    second = env.step()
    assert second.step is not None and second.step.analysis.decision == "promote", second
    assert "canaryTrafficPercent" not in env.api.object(env.path)["spec"]["predictor"]
    assert env.registry.resolve(MODEL, "production").version == good
    # The canary's figures came from its own pod: the predictor revision labels its requests.
    served = env.prom.scalar(f'sum({T.REQUESTS}{{model="{MODEL}",version="{good}"}})')
    assert served >= 30
    wait_for(env.prom, f'{T.ROLLOUT_STATE}{{version="{good}",state="promoted"}}',
             lambda v: v == 1, "promoted state scraped")  # fmt: skip


def test_bad_candidate_is_rolled_back_on_the_pods_and_the_alert_fires(cluster: Cluster) -> None:
    env, good, bad = cluster, cluster.versions["good"], cluster.versions["bad"]
    if env.registry.resolve(MODEL, "production").version != good:
        pytest.skip("needs the good candidate promoted first")
    _start_canary(env, bad)
    result = env.step()
    assert result.step is not None and result.step.analysis.decision == "rollback", result
    assert any("carrier=UA" in r for r in result.step.analysis.reasons), result.step.analysis
    assert env.api.object(env.path)["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert env.registry.resolve(MODEL, "production").version == good
    wait_for(
        env.prom,
        'ALERTS{alertname="FlightDelayCanaryRolledBack",alertstate="firing"}',
        lambda v: v == 1,
        "FlightDelayCanaryRolledBack firing",
        timeout_s=30,
    )
    # Traffic is back on the stable revision; the transformer still answers.
    env.replay(20)


def test_the_charts_controller_deployment_runs_as_a_pod(cluster: Cluster) -> None:
    """The rendered rollout-controller Deployment, under its security context, with the registry
    PVC: it reads the InferenceService with its Role, sends nothing when no canary runs, and
    exports the rolled-back state the alert reads."""
    from serving_pods import PodSet, cluster_dns, deployment_pod, with_api_credentials

    env, bad = cluster, cluster.versions["bad"]
    if env.api.object(env.path)["spec"]["predictor"].get("canaryTrafficPercent") != 0:
        pytest.skip("needs the bad candidate rolled back first")
    values = {**env.pods.values, "rolloutController": {
        "enabled": True, "prometheusUrl": env.prom.url, "metricsPort": env.controller_port,
        "intervalSeconds": 2, "minRequests": 30}}  # fmt: skip
    objects = render(values, env.work)
    kubeconfig = env.work / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": env.api.url}}],
        "users": [{"name": "rollout", "user": {"token": "rollout-service-account"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "rollout"}}],
    }))  # fmt: skip
    kubeconfig.chmod(0o644)
    dns = cluster_dns(objects, env.work / "hosts-controller")
    pod = with_api_credentials(deployment_pod(objects, "rollout-controller", dns), kubeconfig)
    patches = len(env.api.patches())
    requests = len(env.api.requests)
    env.played.append(play(PodSet(pods=[pod]), env.pods.claims, env.work, "controller"))
    expr = (f'{T.ROLLOUT_STATE}{{instance="127.0.0.1:{env.controller_port}",'
            f'state="rolled_back",version="{bad}"}}')  # fmt: skip
    try:
        wait_for(env.prom, expr, lambda v: v == 1, "the controller pod's state", timeout_s=120)
    except TimeoutError as err:
        raise AssertionError(f"{err}\n{logs(PodSet(pods=[pod]))}") from err
    assert len(env.api.requests) > requests  # it read the InferenceService...
    assert len(env.api.patches()) == patches  # ...and, with no canary running, wrote nothing
