"""Render the repository's Kubernetes packaging and check every object with the tool made for it.

Renders the Helm chart (its default and ``ci/*-values.yaml`` values) and each Kustomize overlay
with the real ``helm`` and ``kubectl`` binaries and checks every object: ``kubernetes-validate
--strict`` for core kinds, ``mlops.kserve_types.validate_inference_service`` for
InferenceServices, ``promtool check rules`` for PrometheusRules. ``python -m tools.k8s_validate``
(``make k8s-validate``) runs all of it; the Kubernetes packaging tests and the security benchmark
import the renderers. Developer tooling: not part of the installed package.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlops.kserve_types import validate_inference_service

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
