"""Fixtures of the container tests: images built with podman, the pipeline run in them.

The images are built from ``images/*.Dockerfile`` by ``tools/build-images.sh`` (podman, a local
bookworm base instead of Docker Hub's python image); layers are cached between sessions. One
session-wide run of the compiled pipeline's steps in the component image fills a registry that
lives outside every container; the serving tests serve what that run pushed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))

from kfp_podman import (  # noqa: E402
    HP,
    MODEL,
    REGISTRY_CLAIM,
    UID,
    ContainerRun,
    chown_for_pods,
    load_ir,
    podman_steps,
    without_tasks,
)
from serving_pods import FEAST_CLAIM, REQUESTS_CLAIM, SERVE_AT  # noqa: E402


@pytest.fixture(scope="session")
def images() -> dict[str, Any]:
    """Both images, built (or found in podman's layer cache) from the Dockerfiles."""
    timings = ROOT / "build" / "images.json"
    timings.parent.mkdir(exist_ok=True)
    subprocess.run(
        ["bash", str(ROOT / "tools" / "build-images.sh")],
        check=True,
        env={**os.environ, "TIMINGS": str(timings)},
    )
    return dict(json.loads(timings.read_text()))


@pytest.fixture(scope="session")
def container_run(
    images: dict[str, Any], prepared_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> ContainerRun:
    """ingest -> validate -> gate -> transform -> train -> evaluate -> push on January 2013,
    each step in the component image as compiled in pipelines/training_pipeline.yaml."""
    import yaml
    from kfp import components, local

    from mlops.feast_ops import apply

    ws = tmp_path_factory.mktemp("containers")
    os.chmod(ws, 0o755)
    repo = ws / "repo"
    shutil.copytree(prepared_repo, repo, ignore=shutil.ignore_patterns("*.db"))
    apply(repo)
    # pytest makes its directories private (0700); the steps run as UID 10001.
    subprocess.run(["chmod", "-R", "a+rX", str(repo)], check=True)
    registry = chown_for_pods(ws / "registry")
    root = ws / "pipeline-root"
    root.mkdir(mode=0o777)
    ir = load_ir(ROOT / "pipelines" / "training_pipeline.yaml")
    # deploy talks to the Kubernetes API (cluster mode); the rollout tests cover that side.
    pipeline = components.load_component_from_text(
        yaml.safe_dump(
            {k: v for k, v in without_tasks(ir, {"deploy-op"}).items() if k != "platforms"}
        )
    )
    # The feature repository is a read-only volume at the same path as on the host (its Feast
    # registry names the parquet sources by absolute path).
    extra = [f"--volume={repo}:{repo}:ro"]
    arguments = {
        "feature_repo": str(repo),
        "first_span": "2013-01",
        "last_span": "2013-01",
        "registry_uri": "/mnt/registry",
        "registry_pvc": REGISTRY_CLAIM,
        "model_name": MODEL,
        "hyperparameters": HP,
        "code_revision": "container-test",
    }
    with podman_steps(ir, arguments, {REGISTRY_CLAIM: registry}, ws / "logs", extra) as runner:
        local.init(runner=runner, pipeline_root=str(root), raise_on_error=False)
        task = pipeline(**arguments)
    outputs = dict(task.outputs) if task.outputs else {}
    assert UID  # the steps ran as the image's user; see kfp_podman.UID
    return ContainerRun(ws, repo, registry, ws / "logs", outputs)


@dataclass
class ServingPods:
    """The chart's serving pods as containers, and what a test needs to reach them."""

    base: str
    version: str
    values: dict[str, Any]
    objects: list[dict[str, Any]]
    podset: Any
    ports: dict[str, int]
    feast_port: int
    claims: dict[str, Path]
    route: Any
    work: Path
    repo: Path
    requests: Path
    played: list[Path]


@pytest.fixture(scope="session")
def pods(container_run: ContainerRun) -> Iterator[ServingPods]:
    """The rendered InferenceService and feature server as pods, serving the pushed version.

    The transformer calls the predictor through ``knative_route`` (all traffic to the one
    revision until a rollout test starts a canary), as KServe's transformer calls the
    predictor's Service.
    """
    from knative_route import Route, serve
    from serving_pods import answers, build, down, logs, play, render

    from mlops.feast_ops import materialize
    from mlops.shadow import free_port

    ws = container_run.workspace / "serving"
    ws.mkdir()
    repo = container_run.repo
    materialize(repo, datetime(2012, 12, 1, tzinfo=UTC), SERVE_AT)
    # The online store's PVC: the SQLite file `feast materialize` filled, and the Feast registry.
    online = chown_for_pods(ws / "feast-online")
    for name in ("online_store.db", "registry.db"):
        shutil.copy(repo / "data" / name, online / name)
        os.chown(online / name, UID, UID)
    requests_dir = chown_for_pods(ws / "requests")
    version = 1
    feast_port = free_port()
    values = {
        "image": {"pullPolicy": "IfNotPresent"},
        "model": {"storageUri": f"pvc://{REGISTRY_CLAIM}/{MODEL}/versions/{version}/model"},
        "inferenceService": {"deploymentMode": "RawDeployment"},
        "feast": {
            # Docker Hub's feastdev/feature-server is out of reach; the component image holds
            # the same Feast release (0.47) and its `feast serve`.
            "image": {"repository": "ghcr.io/flight-delay-mlops/components", "tag": "0.1.0"},
            "replicas": 1,
            "port": feast_port,
            "registry": "/var/lib/feast/registry.db",
            "onlineStore": {
                "type": "sqlite",
                "connectionString": "",
                "path": "/var/lib/feast/online_store.db",
                "existingClaim": FEAST_CLAIM,
            },
        },
        "requestLog": {"persistence": {"claimName": REQUESTS_CLAIM}},
    }
    objects = render(values, ws)
    ports = {"predictor": free_port(), "transformer": free_port(), "route": free_port()}
    claims = {REGISTRY_CLAIM: container_run.registry, FEAST_CLAIM: online,
              REQUESTS_CLAIM: requests_dir}  # fmt: skip
    route = Route()
    route.set({f"127.0.0.1:{ports['predictor']}": 100})
    with serve(route, ports["route"]) as route_host:
        podset = build(objects, ports, claims, ws, predictor_host=route_host)
        played = [play(podset, claims, ws)]
        base = f"http://127.0.0.1:{ports['transformer']}"
        try:
            deadline = time.monotonic() + 300
            while not answers(f"{base}/v1/models/{MODEL}"):
                if time.monotonic() > deadline:
                    pytest.fail(f"transformer not ready in 300 s:\n{logs(podset)}")
                time.sleep(1)
            yield ServingPods(base, str(version), values, objects, podset, ports, feast_port,
                              claims, route, ws, repo, requests_dir, played)  # fmt: skip
        finally:
            for kube in reversed(played):
                down(kube, podset.claims)
