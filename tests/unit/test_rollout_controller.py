"""The rollout controller: canary patches on the chart's predictor, merge patches, the pass loop,
the exported state, the CLI and the chart's Deployment.

The InferenceService and the controller's Deployment are rendered from the real chart with the
real helm (``tools/install-helm.sh``); the API and Prometheus are in-memory stand-ins here
(tests/integration/test_rollout_controller_api.py runs the real kubernetes client and a real
Prometheus).
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops import telemetry as T
from mlops.kserve_types import validate_inference_service
from mlops.registry import Lineage, ModelRegistry, version_from_uri
from mlops.rollout import (
    ClusterRollout,
    PrometheusClient,
    PrometheusError,
    RolloutThresholds,
    canary_patch,
    merge_patch,
    predictor_storage_uri,
    service_state,
)
from mlops.rollout_controller import (
    HOLD_SECONDS,
    RolloutController,
    RolloutMetrics,
    pod_namespace,
)
from tools.k8s_validate import HELM, ROOT, render_chart, validate_core

pytestmark = pytest.mark.unit

MODEL = "flight-delay"
URI = "pvc://flight-delay-registry/flight-delay/versions/{}/model"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The chart rendered with the controller on."""
    if not HELM.exists():
        subprocess.run(["bash", str(ROOT / "tools" / "install-helm.sh")], check=True)
    values = tmp_path_factory.mktemp("values") / "controller-values.yaml"
    values.write_text(yaml.safe_dump({"rolloutController": {"enabled": True}}))
    return [d for d in yaml.safe_load_all(render_chart(values)) if d]


@pytest.fixture
def chart_isvc(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    (isvc,) = [o for o in rendered if o["kind"] == "InferenceService"]
    return copy.deepcopy(isvc)


def _env(isvc: dict[str, Any]) -> dict[str, str]:
    (container,) = isvc["spec"]["predictor"]["containers"]
    return {e["name"]: e["value"] for e in container["env"]}


# -- canary_patch on the chart's predictor --------------------------------------------------------


def test_canary_on_the_charts_container_predictor_sets_storage_uri_env(chart_isvc: dict) -> None:
    predictor = chart_isvc["spec"]["predictor"]
    assert "model" not in predictor and predictor["containers"][0]["name"] == "kserve-container"
    validate_inference_service(chart_isvc)

    started = canary_patch(chart_isvc, URI.format(3), 10)
    validate_inference_service(started)
    assert _env(started)["STORAGE_URI"] == URI.format(3)
    assert started["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert "storageUri" not in started["spec"]["predictor"]  # KServe's types reject it there
    assert predictor_storage_uri(started) == URI.format(3)
    assert version_from_uri(predictor_storage_uri(started) or "") == 3
    assert chart_isvc["spec"]["predictor"] == predictor  # the input is untouched

    stepped = canary_patch(started, None, 50)
    promoted = canary_patch(stepped, None, None)
    rolled_back = canary_patch(started, None, 0)
    for obj in (stepped, promoted, rolled_back):
        validate_inference_service(obj)
        assert _env(obj)["STORAGE_URI"] == URI.format(3)
    assert "canaryTrafficPercent" not in promoted["spec"]["predictor"]
    assert rolled_back["spec"]["predictor"]["canaryTrafficPercent"] == 0


def test_canary_replaces_a_value_from_and_adds_a_missing_env(chart_isvc: dict) -> None:
    (container,) = chart_isvc["spec"]["predictor"]["containers"]
    container["env"] = [{"name": "STORAGE_URI", "valueFrom": {"configMapKeyRef": {
        "name": "models", "key": "uri"}}}]  # fmt: skip
    assert _env(canary_patch(chart_isvc, URI.format(4), 10))["STORAGE_URI"] == URI.format(4)
    del container["env"]
    patched = canary_patch(chart_isvc, URI.format(5), 10)
    validate_inference_service(patched)
    assert _env(patched) == {"STORAGE_URI": URI.format(5)}


def test_a_model_block_predictor_gets_model_storage_uri() -> None:
    isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": MODEL},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "tensorflow"},
                                             "storageUri": URI.format(1)}}}}  # fmt: skip
    started = canary_patch(isvc, URI.format(2), 10)
    validate_inference_service(started)
    assert started["spec"]["predictor"]["model"]["storageUri"] == URI.format(2)
    assert predictor_storage_uri(started) == URI.format(2)
    validate_inference_service(canary_patch(started, None, None))


def test_a_predictor_without_kserve_container_is_refused(chart_isvc: dict) -> None:
    chart_isvc["spec"]["predictor"]["containers"][0]["name"] = "main"
    with pytest.raises(ValueError, match="kserve-container"):
        canary_patch(chart_isvc, URI.format(2), 10)


def test_merge_patch_sends_null_for_a_removed_field_and_whole_lists(chart_isvc: dict) -> None:
    started = canary_patch(chart_isvc, URI.format(3), 10)
    body = merge_patch(chart_isvc, started)
    assert body["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert body["spec"]["predictor"]["containers"] == started["spec"]["predictor"]["containers"]
    assert set(body) == {"spec"} and set(body["spec"]) == {"predictor"}
    assert merge_patch(started, canary_patch(started, None, None)) == {
        "spec": {"predictor": {"canaryTrafficPercent": None}}
    }
    assert merge_patch(started, started) == {}


def test_service_state() -> None:
    def isvc(version: int, traffic: int | None) -> dict[str, Any]:
        predictor = {"containers": [{"name": "kserve-container", "image": "x"}]}
        return canary_patch({"spec": {"predictor": predictor}}, URI.format(version), traffic)

    assert service_state(isvc(3, 10), 2).state == "canary"
    assert service_state(isvc(3, 0), 2).state == "rolled_back"
    assert not service_state(isvc(3, 0), 2).canary_running
    assert service_state(isvc(3, None), 3).state == "promoted"
    assert not service_state(isvc(3, 10), 3).canary_running  # the canary is production itself
    assert service_state(isvc(3, None), 2).state is None


# -- the controller against in-memory API, Prometheus and a real registry ------------------------


class MemoryAPI:
    """Only get and merge-patch, like the rollout Role: a PUT (replace) has no method here."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = copy.deepcopy(obj)
        self.obj["metadata"]["resourceVersion"] = "1"
        self.patches: list[dict[str, Any]] = []

    def get_namespaced_custom_object(self, *args: str, _request_timeout: Any) -> dict[str, Any]:
        assert _request_timeout  # every call has a timeout
        return copy.deepcopy(self.obj)

    def patch_namespaced_custom_object(self, *args: Any, _request_timeout: Any) -> dict[str, Any]:
        assert _request_timeout
        body = args[-1]
        assert body["metadata"]["resourceVersion"] == self.obj["metadata"]["resourceVersion"]
        self.patches.append(copy.deepcopy(body))
        self.obj = _apply(self.obj, body)
        self.obj["metadata"]["resourceVersion"] = str(len(self.patches) + 1)
        return copy.deepcopy(self.obj)


def _apply(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _apply(out.get(k), v)
    return out


class CannedPrometheus(PrometheusClient):
    """Every version served 1000 requests at 10 ms, 500 in each of two slices; ``failing``
    versions erred on 10 %."""

    def __init__(self, failing: tuple[str, ...] = ()) -> None:
        super().__init__("http://prometheus.invalid")
        self.failing = failing
        self.down = False

    def query(self, promql: str) -> list[dict[str, Any]]:
        if self.down:
            # What PrometheusClient raises once its tries are spent (real servers:
            # tests/integration/test_rollout_evidence.py).
            raise PrometheusError("Prometheus at http://prometheus.invalid failed 3 tries")
        version = promql.split('version="', 1)[1].split('"', 1)[0]
        if "slice_key" in promql:
            if T.PREDICTION_SCORE in promql:
                value = 0.25
            elif 'outcome="positive"' in promql:
                value = 0.2
            else:
                value = 500.0
            return [{"metric": {"slice_key": "carrier", "slice_value": v}, "value": [0, str(value)]}
                    for v in ("UA", "other")]  # fmt: skip
        if T.REQUEST_ERRORS in promql:
            value = 100.0 if version in self.failing else 0.0
        elif T.REQUESTS in promql:
            value = 1000.0
        elif "histogram_quantile" in promql:
            value = 0.01
        else:
            return []
        return [{"metric": {}, "value": [0, str(value)]}]


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    reg = ModelRegistry(str(tmp_path / "registry"))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "saved_model.pb").write_bytes(b"x")
    for _ in range(3):
        reg.register(MODEL, tmp_path / "m", Lineage(blessed=True), {})
    reg.set_alias(MODEL, "production", 1)
    return reg


def _controller(chart_isvc: dict, registry: ModelRegistry,
                prom: PrometheusClient) -> tuple[RolloutController, MemoryAPI]:  # fmt: skip
    api = MemoryAPI(canary_patch(chart_isvc, URI.format(1), None))
    rollout = ClusterRollout(api, prom, registry, MODEL, "flight-delay", MODEL,
                             RolloutThresholds(min_requests=100))  # fmt: skip
    return RolloutController(rollout, RolloutMetrics(MODEL)), api


def _gauge(metrics: RolloutMetrics, version: int) -> dict[str, float | None]:
    return {s: metrics.registry.get_sample_value(
        T.ROLLOUT_STATE, {"model": MODEL, "version": str(version), "state": s})
        for s in T.ROLLOUT_STATES}  # fmt: skip


def test_good_canary_steps_to_promotion_with_patches_only(chart_isvc, registry) -> None:
    controller, api = _controller(chart_isvc, registry, CannedPrometheus())
    controller.rollout.start(2, URI.format(2))
    assert api.obj["spec"]["predictor"]["canaryTrafficPercent"] == 10

    first = controller.run_once()
    assert first.before.state == "canary" and first.step is not None
    assert api.obj["spec"]["predictor"]["canaryTrafficPercent"] == 50
    assert _gauge(controller.metrics, 2) == {"canary": 1, "promoted": 0, "rolled_back": 0}

    second = controller.run_once()
    assert second.after.state == "promoted"
    assert "canaryTrafficPercent" not in api.obj["spec"]["predictor"]
    assert registry.resolve(MODEL, "production").version == 2
    assert _gauge(controller.metrics, 2) == {"canary": 0, "promoted": 1, "rolled_back": 0}
    assert [p["spec"]["predictor"].get("canaryTrafficPercent", "absent") for p in api.patches] == [
        10, 50, None]  # fmt: skip

    # Stray passes on a promoted service send nothing.
    controller.run_once()
    assert controller.rollout.step(2, 1) is None
    assert len(api.patches) == 3
    kinds = [e["kind"] for e in registry.lineage(MODEL, 2).events]
    assert kinds[-4:] == ["canary_started", "canary_traffic_raised", "promoted", "alias_set"]


def test_bad_canary_is_rolled_back_and_a_rolled_back_service_is_left_alone(
    chart_isvc, registry
) -> None:
    controller, api = _controller(chart_isvc, registry, CannedPrometheus(failing=("3",)))
    controller.run_once()  # production, no canary: nothing sent
    assert api.patches == [] and _gauge(controller.metrics, 1)["promoted"] == 1

    controller.rollout.start(3, URI.format(3))
    result = controller.run_once()
    assert result.step is not None and result.step.analysis.decision == "rollback"
    assert api.obj["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert _gauge(controller.metrics, 3) == {"canary": 0, "promoted": 0, "rolled_back": 1}
    # The previous version's series are gone: one version, one state.
    assert _gauge(controller.metrics, 1) == dict.fromkeys(T.ROLLOUT_STATES)
    assert registry.resolve(MODEL, "production").version == 1

    patches = len(api.patches)
    again = controller.run_once()  # canaryTrafficPercent 0: never restarted
    assert again.step is None and len(api.patches) == patches
    assert _gauge(controller.metrics, 3)["rolled_back"] == 1


def test_a_hold_is_recorded_once(chart_isvc, registry) -> None:
    prom = CannedPrometheus()
    controller, api = _controller(chart_isvc, registry, prom)
    controller.rollout.thresholds = RolloutThresholds(min_requests=5000)
    controller.rollout.start(2, URI.format(2))
    for _ in range(3):
        result = controller.run_once()
        assert result.step is not None and result.step.analysis.decision == "hold"
    assert api.obj["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert len(api.patches) == 1  # the start; a hold patches nothing
    kinds = [e["kind"] for e in registry.lineage(MODEL, 2).events]
    assert kinds[-2:] == ["canary_started", "canary_held"]


def test_start_refuses_a_uri_of_another_version(chart_isvc, registry) -> None:
    controller, api = _controller(chart_isvc, registry, CannedPrometheus())
    with pytest.raises(ValueError, match="versions/2/model"):
        controller.rollout.start(2, URI.format(3))
    assert api.patches == []


def test_an_invalid_object_is_never_sent(chart_isvc, registry) -> None:
    controller, api = _controller(chart_isvc, registry, CannedPrometheus())
    api.obj["spec"]["predictor"]["canaryTraficPercent"] = 5  # a typo someone applied
    with pytest.raises(ValueError, match="canaryTraficPercent"):
        controller.rollout.start(2, URI.format(2))
    assert api.patches == []


def test_prometheus_down_holds_then_the_next_pass_goes_on(chart_isvc, registry) -> None:
    prom = CannedPrometheus()
    controller, api = _controller(chart_isvc, registry, prom)
    controller.rollout.start(2, URI.format(2))
    prom.down = True
    result = controller.run_safely()
    assert result is not None and result.step is not None
    assert result.step.analysis.decision == "hold"
    assert result.step.analysis.reasons == [
        "no evidence: Prometheus at http://prometheus.invalid failed 3 tries"
    ]
    assert api.obj["spec"]["predictor"]["canaryTrafficPercent"] == 10 and len(api.patches) == 1
    hold = {"model": MODEL, "version": "2"}
    assert controller.metrics.registry.get_sample_value(HOLD_SECONDS, hold) is not None
    assert _gauge(controller.metrics, 2)["canary"] == 1
    prom.down = False
    assert controller.run_safely() is not None
    assert api.obj["spec"]["predictor"]["canaryTrafficPercent"] == 50
    assert controller.metrics.registry.get_sample_value(HOLD_SECONDS, hold) == 0
    kinds = [e["kind"] for e in registry.lineage(MODEL, 2).events]
    assert kinds[-3:] == ["canary_started", "canary_held", "canary_traffic_raised"]


def test_a_hold_past_the_time_limit_rolls_back(chart_isvc, registry) -> None:
    import time

    prom = CannedPrometheus()
    controller, api = _controller(chart_isvc, registry, prom)
    controller.rollout.thresholds = RolloutThresholds(min_requests=100, max_hold_seconds=1.0)
    controller.rollout.start(2, URI.format(2))
    prom.down = True
    first = controller.run_once()
    assert first.step is not None and first.step.analysis.decision == "hold"
    assert api.obj["spec"]["predictor"]["canaryTrafficPercent"] == 10
    time.sleep(1.2)
    second = controller.run_once()
    assert second.step is not None and second.step.analysis.decision == "rollback"
    assert second.step.analysis.reasons[0].endswith("over the limit of 1 s, without the "
                                                    "evidence to promote")  # fmt: skip
    assert api.obj["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert registry.resolve(MODEL, "production").version == 1
    assert _gauge(controller.metrics, 2)["rolled_back"] == 1
    kinds = [e["kind"] for e in registry.lineage(MODEL, 2).events]
    assert kinds[-3:] == ["canary_started", "canary_held", "rolled_back"]


def test_api_errors_are_counted_and_nothing_is_written(chart_isvc, registry) -> None:
    controller, api = _controller(chart_isvc, registry, CannedPrometheus())
    controller.rollout.start(2, URI.format(2))
    controller.rollout.backoff = 0.01
    calls = []

    def refused(*args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs["_request_timeout"])
        raise ConnectionRefusedError("connection refused")

    api.get_namespaced_custom_object = refused  # type: ignore[method-assign]
    assert controller.run_safely() is None
    assert len(calls) == 3  # the read is retried, then the pass gives up
    errors = {"model": MODEL}
    assert controller.metrics.registry.get_sample_value(f"{T.PREFIX}_rollout_pass_errors_total",
                                                        errors) == 1  # fmt: skip
    assert len(api.patches) == 1  # the start only


def test_a_stray_step_without_a_canary_creates_none(chart_isvc, registry) -> None:
    controller, api = _controller(chart_isvc, registry, CannedPrometheus())
    events = {v: len(registry.lineage(MODEL, v).events) for v in (1, 2, 3)}
    # Production only, no canaryTrafficPercent: a step for any version sends and records nothing.
    assert controller.rollout.step(2, 1) is None
    assert controller.rollout.step(1, 1) is None
    assert api.patches == []
    # A rolled-back canary (traffic 0) and a step for a version other than the canary's.
    controller.rollout.start(2, URI.format(2))
    assert controller.rollout.step(3, 1) is None
    api.obj["spec"]["predictor"]["canaryTrafficPercent"] = 0
    assert controller.rollout.step(2, 1) is None
    assert len(api.patches) == 1  # the start only
    assert "canaryTrafficPercent" in api.obj["spec"]["predictor"]
    assert {v: len(registry.lineage(MODEL, v).events) for v in (1, 3)} == {1: events[1],
                                                                          3: events[3]}  # fmt: skip
    assert [e["kind"] for e in registry.lineage(MODEL, 2).events][events[2] :] == ["canary_started"]


# -- CLI and chart ----------------------------------------------------------------------------


def test_pod_namespace(tmp_path: Path) -> None:
    assert pod_namespace(tmp_path / "absent") == "flight-delay"
    (tmp_path / "ns").write_text("models\n")
    assert pod_namespace(tmp_path / "ns") == "models"


def test_chart_deployment_runs_the_cli_with_the_rollout_service_account(rendered) -> None:
    from mlops.cli import build_parser

    (dep,) = [o for o in rendered if o["kind"] == "Deployment"
              and o["metadata"]["name"].endswith("-rollout-controller")]  # fmt: skip
    validate_core(dep)
    pod = dep["spec"]["template"]["spec"]
    (role,) = [o for o in rendered if o["kind"] == "Role" and o["metadata"]["name"].endswith(
        "-rollout")]  # fmt: skip
    (binding,) = [o for o in rendered if o["kind"] == "RoleBinding"
                  and o["roleRef"]["name"] == role["metadata"]["name"]]  # fmt: skip
    assert pod["serviceAccountName"] == binding["subjects"][0]["name"] == "flight-delay-rollout"
    assert pod["automountServiceAccountToken"] is True
    (c,) = pod["containers"]
    assert c["command"] == ["mlops"] and c["image"].split("/")[-1].startswith("components:")
    args = build_parser().parse_args(c["command"][1:] + c["args"])
    assert args.command == "rollout-controller" and not args.once
    assert (args.inference_service, args.namespace, args.model_name) == (MODEL, "flight-delay",
                                                                         MODEL)  # fmt: skip
    assert args.prometheus_url == "http://prometheus-operated.monitoring:9090"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert args.registry_uri == mounts["registry"] and mounts["tmp"] == "/tmp"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["tmp"]
    assert volumes["registry"]["persistentVolumeClaim"]["claimName"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert set(c["resources"]) == {"requests", "limits"}
    (svc,) = [o for o in rendered if o["kind"] == "Service"
              and o["metadata"]["name"] == dep["metadata"]["name"]]  # fmt: skip
    validate_core(svc)
    assert svc["spec"]["ports"][0]["port"] == args.metrics_port == c["ports"][0]["containerPort"]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    # Only the verbs the controller sends, on the one InferenceService.
    assert role["rules"] == [{"apiGroups": ["serving.kserve.io"],
                              "resources": ["inferenceservices"],
                              "resourceNames": [MODEL], "verbs": ["get", "patch"]}]  # fmt: skip


def test_controller_is_off_by_default() -> None:
    if not HELM.exists():
        subprocess.run(["bash", str(ROOT / "tools" / "install-helm.sh")], check=True)
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(render_chart()) if d]
    assert not any(n.endswith("-rollout-controller") for n in names)


def test_cli_once_reads_through_kubeconfig_and_survives_an_unreachable_prometheus(
    rendered, chart_isvc, registry, tmp_path: Path
) -> None:
    import sys

    from fake_kube_api import FakeKubeAPI

    (role,) = [o for o in rendered if o["kind"] == "Role" and o["metadata"]["name"].endswith(
        "-rollout")]  # fmt: skip
    api = FakeKubeAPI(role["rules"])
    api.put_object(canary_patch(chart_isvc, URI.format(2), 10), "inferenceservices")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": "SERVER"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        "users": [{"name": "fake", "user": {}}],
    }))  # fmt: skip
    with api.serve():
        kubeconfig.write_text(kubeconfig.read_text().replace("SERVER", api.url))
        proc = subprocess.run(
            [sys.executable, "-m", "mlops.cli", "rollout-controller", "--once",
             "--metrics-port=0", f"--registry-uri={registry.uri}",
             "--prometheus-url=http://127.0.0.1:9"],
            env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin"},
            capture_output=True, text=True, cwd=tmp_path, timeout=120,
        )  # fmt: skip
    # Prometheus unreachable is no evidence: the pass holds the canary, it neither fails nor
    # promotes, and the reason names the Prometheus it could not read.
    assert proc.returncode == 0, proc.stderr
    assert "hold -> traffic 10 (no evidence: Prometheus at http://127.0.0.1:9 failed 3 tries" in (
        proc.stderr)  # fmt: skip
    assert {r.method for r in api.requests} == {"GET"}  # read the canary, patched nothing
    assert registry.lineage(MODEL, 2).events[-1]["kind"] == "canary_held"
