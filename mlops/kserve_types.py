"""Strict structural check of KServe InferenceService manifests against the KServe SDK's types.

``kubernetes-validate`` passes custom resources it has no schema for, so an InferenceService with
a typo'd field (``canaryTraficPercent``) would sail through it and be pruned silently by the API
server. The ``kserve`` SDK's generated models carry the InferenceService OpenAPI types
(``openapi_types``, ``attribute_map``), and the Kubernetes client's models carry those of the
embedded pod fields (``V1Container`` and the rest). This module walks a manifest against them: an
unknown key, a wrong primitive type or a missing required field raises ``ValueError`` naming the
path. The rollout controller checks every patch with it before sending; the chart checks
(``tools/k8s_validate.py``) check every rendered InferenceService with it.

The walk is the same for any custom resource whose SDK is generated the same way:
:func:`validate_custom_object` checks the train step's TFJob against the Kubeflow Training
Operator SDK's ``KubeflowOrgV1TFJob`` (``kubeflow-training``, a dev dependency: tests only).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"

_LIST = re.compile(r"^list\[(.+)\]$")
_DICT = re.compile(r"^dict\((\w+), (.+)\)$")
# Types the generators name but do not define as classes.
_ALIASES = {"K8sIoApiAppsV1DeploymentStrategy": "V1DeploymentStrategy"}


@cache
def _model_class(name: str) -> type | None:
    """The generated model class called ``name``.

    The Training Operator SDK's (``KubeflowOrg*``), else KServe's, else the Kubernetes client's.
    """
    import kubernetes.client.models

    name = _ALIASES.get(name, name)
    if name.startswith("KubeflowOrg"):
        import kubeflow.training.models

        return getattr(kubeflow.training.models, name, None)
    import kserve.models

    return getattr(kserve.models, name, None) or getattr(kubernetes.client.models, name, None)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(value: Any) -> str:
    return type(value).__name__


def _check(value: Any, type_str: str, path: str) -> Any:
    """Check ``value`` against an OpenAPI type string; return it as the SDK would hold it."""
    if m := _LIST.match(type_str):
        if not isinstance(value, list):
            raise ValueError(f"{path}: expected a list, got {_type_name(value)}")
        return [_check(v, m.group(1), f"{path}[{i}]") for i, v in enumerate(value)]
    if m := _DICT.match(type_str):
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected a mapping, got {_type_name(value)}")
        return {k: _check(v, m.group(2), _join(path, k)) for k, v in value.items()}
    if type_str == "str":
        if not isinstance(value, str):
            raise ValueError(f"{path}: expected a string, got {_type_name(value)} {value!r}")
        return value
    if type_str == "int":
        # bool is an int subclass in Python; YAML `true` where a number belongs is a mistake.
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{path}: expected an integer, got {_type_name(value)} {value!r}")
        return value
    if type_str == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{path}: expected a number, got {_type_name(value)} {value!r}")
        return value
    if type_str == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{path}: expected a boolean, got {_type_name(value)} {value!r}")
        return value
    if type_str in ("ResourceQuantity", "IntOrString"):
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"{path}: expected a quantity, got {_type_name(value)} {value!r}")
        return value
    if type_str in ("datetime", "date", "V1Time"):
        if not isinstance(value, str):
            raise ValueError(f"{path}: expected a timestamp string, got {_type_name(value)}")
        return value
    if type_str == "object":
        # Free-form in the API (e.g. int-or-string ports): nothing more to check.
        return value
    cls = _model_class(type_str)
    if cls is None:
        # Only status types (Knative addressable/URL/conditions) are left undefined by the SDK.
        return value
    return _check_model(value, cls, path)


def _check_model(value: Any, cls: type, path: str) -> Any:
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a mapping ({cls.__name__}), got {_type_name(value)}")
    by_json_key = {json_key: attr for attr, json_key in cls.attribute_map.items()}  # type: ignore[attr-defined]
    kwargs: dict[str, Any] = {}
    for key, item in value.items():
        attr = by_json_key.get(key)
        child = _join(path, key)
        if attr is None:
            known = ", ".join(sorted(by_json_key))
            raise ValueError(f"{child}: unknown field of {cls.__name__} (known: {known})")
        if item is None:
            continue
        kwargs[attr] = _check(item, cls.openapi_types[attr], child)  # type: ignore[attr-defined]
    try:
        # The generated setters reject a missing required field (e.g. a container's name).
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path or cls.__name__}: {err}") from err


def validate_inference_service(obj: dict[str, Any]) -> None:
    """Check a rendered InferenceService against the KServe SDK's OpenAPI types.

    Every key must be a field of the typed model at its place (``V1beta1InferenceService`` at the
    top, ``V1Container`` inside ``spec.predictor.containers`` and so on), every primitive value of
    the declared type, and every required field present.

    Args:
        obj: The manifest as parsed from YAML.

    Raises:
        ValueError: The manifest is not a valid InferenceService; the message starts with the
            path of the offending field, e.g. ``spec.predictor.canaryTraficPercent: unknown
            field of V1beta1PredictorSpec``.
    """
    import kserve.models

    validate_custom_object(obj, API_VERSION, KIND, kserve.models.V1beta1InferenceService)


def validate_custom_object(obj: dict[str, Any], api_version: str, kind: str, model: type) -> None:
    """Check a custom resource against its SDK's generated ``model`` class, field by field.

    Args:
        obj: The manifest as parsed from YAML or built as a dict.
        api_version: The ``apiVersion`` it must have.
        kind: The ``kind`` it must have.
        model: The generated top-level class (e.g. ``KubeflowOrgV1TFJob``).

    Raises:
        ValueError: Not that kind, no ``spec``, or a field fails; the message starts with the
            offending field's path.
    """
    if not isinstance(obj, dict):
        raise ValueError(f"expected a mapping, got {_type_name(obj)}")
    if obj.get("apiVersion") != api_version or obj.get("kind") != kind:
        raise ValueError(
            f"not a {api_version} {kind}: apiVersion={obj.get('apiVersion')!r}, "
            f"kind={obj.get('kind')!r}"
        )
    if "spec" not in obj:
        raise ValueError("spec: missing")
    _check_model(obj, model, "")
