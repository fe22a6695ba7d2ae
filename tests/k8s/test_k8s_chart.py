"""The Helm chart, checked with the real helm binary and the schemas of what it renders."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.k8s_validate import (
    CHART,
    CUSTOM_KINDS,
    ROOT,
    ManifestSet,
    ci_values_files,
    helm,
    render_chart,
    validate_core,
    validate_inference_service,
)

pytestmark = pytest.mark.integration

RULES = CHART / "files" / "prometheus" / "alerts.rules.yml"


def _chart_sets(rendered: list[ManifestSet]) -> list[ManifestSet]:
    return [m for m in rendered if m.name.startswith("chart-")]


def _by_kind(mset: ManifestSet, kind: str) -> list[dict[str, Any]]:
    return [o for o in mset.objects() if o["kind"] == kind]


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] == "InferenceService":
        return [c for part in obj["spec"].values() for c in part.get("containers", [])]
    spec = obj["spec"]
    spec = spec.get("jobTemplate", {}).get("spec", spec)
    pod = spec["template"]["spec"] if "template" in spec else spec
    return pod.get("containers", []) + pod.get("initContainers", [])


@pytest.mark.parametrize(
    "values", [None, *ci_values_files()], ids=lambda v: v.name if v else "default"
)
def test_helm_lint_strict_passes(helm_bin: Path, values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART)] + (["--values", str(values)] if values else [])
    proc = helm(*args, helm_bin=helm_bin)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        # A string where the schema wants an integer.
        ("inferenceService.predictor.minReplicas=two",
         "inferenceService.predictor.minReplicas: Invalid type. Expected: integer, given: string"),
        # An unknown (typo'd) key.
        ("inferenceService.predictor.canaryTraficPercent=10",
         "Additional property canaryTraficPercent is not allowed"),
        # Out of range.
        ("inferenceService.predictor.canaryTrafficPercent=150",
         "canaryTrafficPercent: Must be less than or equal to 100"),
        # Not one of the allowed values.
        ("inferenceService.deploymentMode=Knative",
         "inferenceService.deploymentMode: inferenceService.deploymentMode must be one of"),
    ],
)  # fmt: skip
def test_mistyped_value_fails_lint_with_clear_message(
    helm_bin: Path, setting: str, message: str
) -> None:
    proc = helm("lint", "--strict", str(CHART), "--set", setting, helm_bin=helm_bin)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_mistyped_value_fails_template_too(helm_bin: Path, tmp_path: Path) -> None:
    values = tmp_path / "bad-values.yaml"
    values.write_text("feast:\n  port: '6566'\n")
    with pytest.raises(RuntimeError, match=r"feast.port: Invalid type. Expected: integer"):
        render_chart(values, helm_bin=helm_bin)


def test_every_core_object_passes_kubernetes_validate_strict(rendered: list[ManifestSet]) -> None:
    checked = 0
    for mset in _chart_sets(rendered):
        for obj in mset.objects():
            if obj["kind"] not in CUSTOM_KINDS:
                validate_core(obj)
                checked += 1
    assert checked > 40


def test_kubernetes_validate_catches_an_unknown_field(rendered: list[ManifestSet]) -> None:
    deployment = _by_kind(_chart_sets(rendered)[0], "Deployment")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(ValueError, match="imagePullPolicyy"):
        validate_core(deployment)


def test_every_inference_service_passes_the_kserve_check(rendered: list[ManifestSet]) -> None:
    services = [o for m in _chart_sets(rendered) for o in _by_kind(m, "InferenceService")]
    assert len(services) == len(_chart_sets(rendered))
    for isvc in services:
        validate_inference_service(isvc)


def test_inference_service_wires_predictor_transformer_and_feast(
    rendered: list[ManifestSet],
) -> None:
    default = next(m for m in rendered if m.name == "chart-default")
    (isvc,) = _by_kind(default, "InferenceService")
    (feast_svc,) = [
        s for s in _by_kind(default, "Service") if s["metadata"]["name"].endswith("feast")
    ]
    predictor = isvc["spec"]["predictor"]["containers"][0]
    transformer = isvc["spec"]["transformer"]["containers"][0]
    assert predictor["image"] == "ghcr.io/flight-delay-mlops/serving:0.1.0"
    # Both servers bind every interface: a pod is reached on its own IP, not loopback.
    assert predictor["args"] == [
        "-m", "serving.predictor", "--model_name=flight-delay", "--model_dir=/mnt/models",
        "--host=0.0.0.0",
    ]  # fmt: skip
    assert "--host=0.0.0.0" in transformer["args"]
    # The schema is package data of mlops, which the serving image installs: the transformer
    # loads it by default (and stops without it), so no path is passed.
    assert not any(a.startswith("--schema") for a in transformer["args"])
    dockerfile = (ROOT / "images" / "serving.Dockerfile").read_text()
    assert "COPY mlops ./mlops" in dockerfile
    assert (ROOT / "mlops" / "schema" / "schema.pbtxt").is_file()
    # The SavedModel of version 1 on the chart's registry PVC (mlops.registry.serving_uri).
    storage = "pvc://flight-delay-registry/flight-delay/versions/1/model"
    assert {"name": "STORAGE_URI", "value": storage} in predictor["env"]
    # The transformer's Feast URL names the Service the chart renders, on its port.
    feast_url = (
        f"--feast_server_url=http://{feast_svc['metadata']['name']}.flight-delay.svc.cluster.local:"
        f"{feast_svc['spec']['ports'][0]['port']}"
    )
    assert transformer["args"][:3] == ["-m", "serving.transformer", "--model_name=flight-delay"]
    assert feast_url in transformer["args"]
    # The request log goes to the shared request-log PVC (one file per pod, rotated).
    assert "--request_log=/mnt/requests" in transformer["args"]
    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]
    assert isvc["spec"]["predictor"]["minReplicas"] == 1
    assert isvc["spec"]["predictor"]["scaleTarget"] == 8


def test_canary_and_registry_settings_come_from_values(rendered: list[ManifestSet]) -> None:
    full = next(m for m in rendered if m.name == "chart-full")
    (isvc,) = _by_kind(full, "InferenceService")
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert isvc["spec"]["predictor"]["containers"][0]["image"] == (
        "registry.example.com/ml/serving:0.1.1"
    )
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    # A rolled-back canary keeps canaryTrafficPercent at 0: it must render, not vanish.
    sqlite = next(m for m in rendered if m.name == "chart-sqlite")
    (isvc,) = _by_kind(sqlite, "InferenceService")
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 0


def test_wrong_inference_service_field_fails_the_kserve_check(
    rendered: list[ManifestSet],
) -> None:
    default = next(m for m in rendered if m.name == "chart-default")
    (isvc,) = _by_kind(default, "InferenceService")
    isvc["spec"]["predictor"]["canaryTraficPercent"] = 10
    with pytest.raises(ValueError, match=r"^spec\.predictor\.canaryTraficPercent: unknown field"):
        validate_inference_service(isvc)


def test_names_fit_63_characters_and_never_collide(rendered: list[ManifestSet]) -> None:
    for mset in _chart_sets(rendered):
        seen: set[tuple[str, str]] = set()
        for obj in mset.objects():
            name = obj["metadata"]["name"]
            assert len(name) <= 63, (mset.name, name)
            key = (obj["kind"], name)
            assert key not in seen, (mset.name, key)
            seen.add(key)
    # The 63-character nameOverride of ci/sqlite-values.yaml really exercised the truncation.
    sqlite = next(m for m in rendered if m.name == "chart-sqlite")
    assert max(len(o["metadata"]["name"]) for o in sqlite.objects()) == 63


def test_every_pod_is_non_root_read_only_and_without_capabilities(
    rendered: list[ManifestSet],
) -> None:
    containers = 0
    for mset in rendered:
        for obj in mset.objects():
            if obj["kind"] not in {"Deployment", "Pod", "CronJob", "InferenceService"}:
                continue
            for c in _containers(obj):
                sc = c["securityContext"]
                assert sc["runAsNonRoot"] is True, (mset.name, c["name"])
                assert sc["readOnlyRootFilesystem"] is True, (mset.name, c["name"])
                assert sc["allowPrivilegeEscalation"] is False, (mset.name, c["name"])
                assert sc["capabilities"]["drop"] == ["ALL"], (mset.name, c["name"])
                assert sc["seccompProfile"]["type"] == "RuntimeDefault", (mset.name, c["name"])
                assert set(c["resources"]) == {"requests", "limits"}, (mset.name, c["name"])
                containers += 1
    # 2 ISVC + Feast + test pod per chart set, Redis and the rollout controller in one, the
    # CronJob per overlay.
    assert containers == 18


def test_rbac_is_namespaced_and_least_privilege(rendered: list[ManifestSet]) -> None:
    default = next(m for m in rendered if m.name == "chart-default")
    kinds = {o["kind"] for o in default.objects()}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    for role in _by_kind(default, "Role"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
            # TFJobs only with rbac.pipeline.trainingJobs, off by default (test_k8s_tfjob.py).
            assert not {"delete", "deletecollection", "create"} & set(rule["verbs"]) or (
                rule["resources"] == ["events"]
            )
            if "patch" in rule["verbs"] and rule["resources"] == ["inferenceservices"]:
                assert rule["resourceNames"] == ["flight-delay"]


def test_optional_parts_are_off_by_default(rendered: list[ManifestSet]) -> None:
    default = {o["kind"] for o in next(m for m in rendered if m.name == "chart-default").objects()}
    full = {o["kind"] for o in next(m for m in rendered if m.name == "chart-full").objects()}
    assert not default & {"ServiceMonitor", "PrometheusRule"}
    assert {"ServiceMonitor", "PrometheusRule"} <= full
    default_names = [o["metadata"]["name"] for o in next(
        m for m in rendered if m.name == "chart-default").objects()]  # fmt: skip
    assert not any(n.endswith("-redis") for n in default_names)


def test_prometheus_rule_embeds_the_canonical_rule_file(
    rendered: list[ManifestSet], promtool: str, tmp_path: Path
) -> None:
    full = next(m for m in rendered if m.name == "chart-full")
    (rule,) = _by_kind(full, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    spec = tmp_path / "spec.rules.yml"
    spec.write_text(yaml.safe_dump(rule["spec"]))
    proc = subprocess.run([promtool, "check", "rules", str(spec)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rules = sum(len(group["rules"]) for group in rule["spec"]["groups"])
    assert rules == 9  # 7 alerts and 2 recording rules, every one of them rendered
    assert f"SUCCESS: {rules} rules found" in proc.stdout


def test_notes_render_with_the_endpoint(helm_bin: Path, tmp_path: Path) -> None:
    # `helm install --dry-run` asks a cluster for its version, and `helm template` skips
    # NOTES.txt; a copy of the chart renders NOTES.txt through `tpl` into a ConfigMap instead.
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "files" / "notes.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n"
        '  notes: {{ tpl (.Files.Get "files/notes.txt") . | quote }}\n'
    )
    proc = helm(
        "template", "flight-delay", str(chart), "--namespace", "flight-delay",
        "--set", "inferenceService.predictor.canaryTrafficPercent=20",
        "--show-only", "templates/zz-notes.yaml", helm_bin=helm_bin,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    notes = yaml.safe_load(proc.stdout)["data"]["notes"]
    assert "with 20% of traffic on the newest revision (canary)" in notes
    assert "/v1/models/flight-delay:predict" in notes
    assert "http://flight-delay-feast.flight-delay.svc.cluster.local:6566" in notes
    assert "helm test flight-delay -n flight-delay" in notes


def test_helm_test_pod_is_a_test_hook(rendered: list[ManifestSet]) -> None:
    default = next(m for m in rendered if m.name == "chart-default")
    (pod,) = _by_kind(default, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["args"][0]
    assert "http://flight-delay.flight-delay.svc.cluster.local/v1/models/flight-delay" in script
    assert "flight-delay-feast.flight-delay.svc.cluster.local:6566/health" in script
    compile(script, "helm-test", "exec")  # the embedded check is valid Python
