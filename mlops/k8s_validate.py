"""Strict structural check of KServe InferenceService manifests against the KServe SDK's types.

``kubernetes-validate`` passes custom resources it has no schema for, so an InferenceService with
a typo'd field (``canaryTraficPercent``) would sail through it and be pruned silently by the API
server. The ``kserve`` SDK's generated models carry the InferenceService OpenAPI types
(``openapi_types``, ``attribute_map``), and the Kubernetes client's models carry those of the
embedded pod fields (``V1Container`` and the rest). This module walks a rendered manifest
against them: an unknown key, a wrong primitive type or a missing required field raises
``ValueError`` naming the path. The chart tests and the rollout controller use it.

The rest of the module renders what the repository ships (the Helm chart with its default and
``ci/*-values.yaml`` values, each Kustomize overlay) with the real ``helm`` and ``kubectl``
binaries and checks every object with the tool made for it: ``kubernetes-validate --strict``
for core kinds, the check above for InferenceServices, ``promtool check rules`` for
PrometheusRules. ``python -m mlops.k8s_validate`` (``make k8s-validate``) runs all of it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "flight-delay"
OVERLAYS = ROOT / "manifests" / "overlays"
HELM = ROOT / ".tools" / "bin" / "helm"
CHECKOV = ROOT / ".tools" / "checkov" / "bin" / "checkov"
RELEASE = "flight-delay"
NAMESPACE = "flight-delay"
# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion >= 1.27; CronJob timeZone is GA
# there); rendered objects are checked against the schemas of this release.
KUBERNETES_VERSION = "1.27.0"
# Kinds without a schema in kubernetes-validate, each with the check that covers it instead.
CUSTOM_KINDS = {"InferenceService", "PrometheusRule", "ServiceMonitor"}

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"

_LIST = re.compile(r"^list\[(.+)\]$")
_DICT = re.compile(r"^dict\((\w+), (.+)\)$")
# Types the generators name but do not define as classes.
_ALIASES = {"K8sIoApiAppsV1DeploymentStrategy": "V1DeploymentStrategy"}


@cache
def _model_class(name: str) -> type | None:
    """The generated model class called ``name`` (KServe first, then the Kubernetes client)."""
    import kserve.models
    import kubernetes.client.models

    name = _ALIASES.get(name, name)
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

    if not isinstance(obj, dict):
        raise ValueError(f"expected a mapping, got {_type_name(obj)}")
    if obj.get("apiVersion") != API_VERSION or obj.get("kind") != KIND:
        raise ValueError(
            f"not a {API_VERSION} {KIND}: apiVersion={obj.get('apiVersion')!r}, "
            f"kind={obj.get('kind')!r}"
        )
    if "spec" not in obj:
        raise ValueError("spec: missing")
    _check_model(obj, kserve.models.V1beta1InferenceService, "")


@dataclass(frozen=True)
class ManifestSet:
    """One rendering of the repository's Kubernetes packaging.

    Attributes:
        name: ``chart-default``, ``chart-<ci values name>`` or ``overlay-<name>``.
        text: The rendered multi-document YAML.
    """

    name: str
    text: str

    def objects(self) -> list[dict[str, Any]]:
        """The rendered objects, empty documents dropped."""
        return [d for d in yaml.safe_load_all(self.text) if d]


def helm(*args: str, helm_bin: Path = HELM) -> subprocess.CompletedProcess[str]:
    """Run the real helm binary; the result carries stdout, stderr and the exit code."""
    return subprocess.run([str(helm_bin), *args], capture_output=True, text=True, check=False)


def render_chart(values: Path | None = None, helm_bin: Path = HELM) -> str:
    """``helm template`` the chart with its defaults, or with one extra values file.

    Raises:
        RuntimeError: helm refused the values or a template failed; the message is helm's.
    """
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if values is not None:
        args += ["--values", str(values)]
    proc = helm(*args, helm_bin=helm_bin)
    if proc.returncode != 0:
        raise RuntimeError(f"helm template failed: {proc.stderr.strip()}")
    return proc.stdout


def render_overlay(name: str) -> str:
    """``kubectl kustomize`` one overlay of manifests/overlays.

    Raises:
        RuntimeError: kustomize failed; the message is kubectl's.
    """
    proc = subprocess.run(
        ["kubectl", "kustomize", str(OVERLAYS / name)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {name} failed: {proc.stderr.strip()}")
    return proc.stdout


def ci_values_files() -> list[Path]:
    """The chart's ``ci/*-values.yaml`` files, each a configuration CI renders."""
    return sorted((CHART / "ci").glob("*-values.yaml"))


def overlay_names() -> list[str]:
    """Names of the Kustomize overlays."""
    return sorted(p.parent.name for p in OVERLAYS.glob("*/kustomization.yaml"))


def render_all(helm_bin: Path = HELM) -> list[ManifestSet]:
    """Every configuration the repository ships, rendered."""
    sets = [ManifestSet("chart-default", render_chart(helm_bin=helm_bin))]
    for values in ci_values_files():
        name = values.name.removesuffix("-values.yaml")
        sets.append(ManifestSet(f"chart-{name}", render_chart(values, helm_bin=helm_bin)))
    sets += [ManifestSet(f"overlay-{o}", render_overlay(o)) for o in overlay_names()]
    return sets


def validate_core(obj: dict[str, Any], version: str = KUBERNETES_VERSION) -> None:
    """Check one core object with ``kubernetes-validate`` in strict mode (no unknown fields).

    Raises:
        ValueError: The object does not match its Kubernetes schema, or has no schema.
    """
    import kubernetes_validate

    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as err:
        path = ".".join(str(p) for p in err.path)
        raise ValueError(f"{where}: {path}: {err.message}") from err
    except kubernetes_validate.SchemaNotFoundError as err:
        raise ValueError(f"{where}: no Kubernetes schema ({err})") from err


def check_prometheus_rule(obj: dict[str, Any]) -> str:
    """Run ``promtool check rules`` on a PrometheusRule's spec (a Prometheus rule file).

    Returns:
        promtool's report.

    Raises:
        ValueError: promtool rejected the rules.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".rules.yml") as fh:
        yaml.safe_dump(obj["spec"], fh)
        fh.flush()
        proc = subprocess.run(
            ["promtool", "check", "rules", fh.name], capture_output=True, text=True, check=False
        )
    if proc.returncode != 0:
        raise ValueError(f"promtool check rules: {proc.stdout.strip()} {proc.stderr.strip()}")
    return proc.stdout


def iter_problems(sets: Sequence[ManifestSet]) -> Iterator[str]:
    """Check every object of every set with its tool; yield one line per problem."""
    for mset in sets:
        for obj in mset.objects():
            kind = obj.get("kind", "")
            where = f"{mset.name}: {kind}/{obj.get('metadata', {}).get('name')}"
            try:
                if kind == "InferenceService":
                    validate_inference_service(obj)
                elif kind == "PrometheusRule":
                    check_prometheus_rule(obj)
                elif kind not in CUSTOM_KINDS:
                    validate_core(obj)
            except ValueError as err:
                yield f"{where}: {err}"


def scan(directory: Path, checkov: Path = CHECKOV) -> dict[str, Any]:
    """Run checkov's Kubernetes framework on a directory of manifests.

    Returns:
        checkov's JSON report: ``summary`` and ``results`` (passed/failed/skipped checks).

    Raises:
        RuntimeError: checkov did not produce a report.
    """
    proc = subprocess.run(
        [str(checkov), "--directory", str(directory), "--framework", "kubernetes",
         "--output", "json", "--skip-download", "--soft-fail"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError as err:
        raise RuntimeError(f"checkov gave no JSON report: {proc.stderr[-2000:]}") from err
    # One framework gives one report; checkov returns a list only for several.
    return report[0] if isinstance(report, list) else report


def main(argv: Sequence[str] | None = None) -> int:
    """Render every configuration, check it, optionally write it out; 1 if anything fails."""
    parser = argparse.ArgumentParser(description="Render and strictly validate charts/manifests.")
    parser.add_argument("--out", type=Path, help="also write each rendered set here as YAML")
    args = parser.parse_args(argv)
    sets = render_all()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for mset in sets:
            (args.out / f"{mset.name}.yaml").write_text(mset.text)
    problems = list(iter_problems(sets))
    for line in problems:
        print(line, file=sys.stderr)
    count = sum(len(m.objects()) for m in sets)
    print(f"{len(sets)} rendered sets, {count} objects, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
