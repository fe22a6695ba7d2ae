"""Shared by the rollout controller's tests: a real Prometheus with the chart's alert rules.

Used by tests/integration/test_rollout_controller_api.py (model servers as processes) and
tests/containers/test_serving_rollout.py (the chart's pods as containers).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from mlops.rollout import PrometheusClient
from mlops.shadow import prometheus
from tools.k8s_validate import CHART, ROOT

RULES = CHART / "files" / "prometheus" / "alerts.rules.yml"


@contextlib.contextmanager
def prometheus_with_rules(
    targets: list[str], controller: str, work: Path
) -> Iterator[PrometheusClient]:
    """A real Prometheus: serving and controller jobs every second, the chart's alert rules."""
    if shutil.which("prometheus") is None:
        subprocess.run(["bash", str(ROOT / "tools" / "install-prometheus.sh")], check=True)
    jobs = {"serving": targets, "rollout-controller": [controller]}
    with prometheus(jobs, work, rule_files=[RULES]) as prom:
        yield prom


def wait_for(prom: PrometheusClient, promql: str, ok: Callable[[float], bool], what: str,
             timeout_s: float = 60.0) -> float:  # fmt: skip
    """Poll a query until ``ok`` holds for its value; TimeoutError names the query."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = prom.scalar(promql)
        if not math.isnan(value) and ok(value):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {promql} = {value}")
        time.sleep(0.25)


def rollout_role_rules(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules of the rollout Role among rendered objects."""
    (role,) = [
        d for d in objects if d["kind"] == "Role" and d["metadata"]["name"].endswith("-rollout")
    ]
    return list(role["rules"])


def with_status(isvc: dict[str, Any]) -> dict[str, Any]:
    """The InferenceService as the API server holds it after KServe reconciled it once."""
    name = isvc["metadata"]["name"]
    isvc["status"] = {
        "url": f"http://{name}.{isvc['metadata']['namespace']}.example.com",
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "components": {"predictor": {"latestReadyRevision": f"{name}-predictor-00001",
                                     "latestCreatedRevision": f"{name}-predictor-00001",
                                     "traffic": [{"revisionName": f"{name}-predictor-00001",
                                                  "percent": 100, "latestRevision": True}]}},
    }  # fmt: skip
    return isvc


def parse(text: str) -> list[dict[str, Any]]:
    """Rendered YAML documents, empty ones dropped."""
    return [d for d in yaml.safe_load_all(text) if d]
