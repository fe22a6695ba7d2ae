"""mlops.kserve_types: the InferenceService check against the KServe SDK's OpenAPI types."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mlops.kserve_types import validate_inference_service

pytestmark = pytest.mark.integration  # imports the real kserve SDK (a few seconds)

ISVC: dict[str, Any] = {
    "apiVersion": "serving.kserve.io/v1beta1",
    "kind": "InferenceService",
    "metadata": {"name": "flight-delay", "namespace": "ml"},
    "spec": {
        "predictor": {
            "canaryTrafficPercent": 10,
            "minReplicas": 1,
            "containers": [
                {
                    "name": "kserve-container",
                    "image": "ghcr.io/flight-delay-mlops/serving:0.1.0",
                    "args": ["-m", "serving.predictor"],
                    "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}},
                }
            ],
        }
    },
}


def _with(path: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(ISVC)
    *parents, last = path.split(".")
    node: Any = obj
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[last] = value
    return obj


def test_a_valid_inference_service_passes() -> None:
    validate_inference_service(ISVC)


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        ("spec.predictor.canaryTraficPercent", 10,
         r"^spec\.predictor\.canaryTraficPercent: unknown field of V1beta1PredictorSpec"),
        ("spec.predictor.minReplicas", "1",
         r"^spec\.predictor\.minReplicas: expected an integer, got str"),
        ("spec.predictor.minReplicas", True,
         r"^spec\.predictor\.minReplicas: expected an integer, got bool"),
        ("spec.predictor.containers.0.imagePullPolicy", 1,
         r"^spec\.predictor\.containers\[0\]\.imagePullPolicy: expected a string"),
        ("spec.predictor.containers.0.resources.limitz", {},
         r"^spec\.predictor\.containers\[0\]\.resources\.limitz: unknown field of "
         r"V1ResourceRequirements"),
        ("spec.predictor.containers.0.ports.0.containerPort", "8080",
         r"^spec\.predictor\.containers\[0\]\.ports\[0\]\.containerPort: expected an integer"),
        ("spec.predictor.containers", {"name": "x"},
         r"^spec\.predictor\.containers: expected a list"),
        ("spec.transformr", {}, r"^spec\.transformr: unknown field of V1beta1InferenceServiceSpec"),
        ("metadata.labels", {"a": 1}, r"^metadata\.labels\.a: expected a string, got int"),
    ],
)  # fmt: skip
def test_a_wrong_field_fails_and_names_its_path(path: str, value: Any, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        validate_inference_service(_with(path, value))


def test_a_missing_required_field_fails() -> None:
    obj = copy.deepcopy(ISVC)
    del obj["spec"]["predictor"]["containers"][0]["name"]
    with pytest.raises(ValueError, match=r"^spec\.predictor\.containers\[0\]: .*`name`"):
        validate_inference_service(obj)


def test_int_or_string_ports_accept_both() -> None:
    validate_inference_service(
        _with("spec.predictor.containers.0.readinessProbe.httpGet.port", "http1")
    )


@pytest.mark.parametrize(
    "obj",
    [
        {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "InferenceService", "spec": {}},
        {"apiVersion": "serving.kserve.io/v1beta1", "kind": "Deployment", "spec": {}},
        {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService"},
    ],
)
def test_not_an_inference_service_fails(obj: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        validate_inference_service(obj)
