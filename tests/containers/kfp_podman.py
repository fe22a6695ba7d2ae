"""Run the compiled pipeline's steps as containers of the component image, with podman.

KFP's own local orchestrator (``kfp.local``) walks the compiled IR
(``pipelines/training_pipeline.yaml``): it builds each step's executor input, fills the
placeholders of the step's compiled command and arguments, and reads the executor output back,
as KFP's driver and launcher do in a cluster. Only the container start is replaced:
``kfp.local.DockerRunner`` needs a Docker engine, so the step runs under podman with what the
cluster's pod has — the component image's non-root user, a read-only root filesystem, an
emptyDir-like ``/tmp``, no capabilities — and the PVCs of the IR's ``kubernetes`` platform spec
(``kfp-kubernetes`` ``mount_pvc``) mounted from host directories.

Differences from a cluster, on purpose and said in docs/cluster.md: artifact URIs are host paths
mounted at the same path (KFP maps ``minio://``/``gs://`` to ``/minio``, ``/gcs``), steps run one at
a time, and resource limits are not applied.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# The component image's user (images/components.Dockerfile), the chart's runAsUser.
UID = 10001
MODEL = "flight-delay"
REGISTRY_CLAIM = "flight-delay-registry"
# A small, quick model: these tests check the cluster path, not model quality.
HP = json.dumps({"epochs": 2, "hidden_units": [32, 16], "batch_size": 1024})


@dataclass
class ContainerRun:
    """What the containerized pipeline left on the host."""

    workspace: Path
    repo: Path
    registry: Path
    logs: Path
    outputs: dict[str, Any]


def executor_function(executor: dict[str, Any]) -> str:
    """The Python function a compiled lightweight-component executor runs."""
    args = executor["container"]["args"]
    return str(args[args.index("--function_to_execute") + 1])


def pvc_mounts(
    ir: dict[str, Any], arguments: dict[str, Any] | None = None
) -> dict[str, dict[str, str]]:
    """Function name -> {PVC claim: mount path}, from the IR's kubernetes platform spec.

    A claim named by a pipeline parameter resolves to its argument, else its default.
    """
    executors = ir["deploymentSpec"]["executors"]
    platform = ir.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {})
    params = ir["root"].get("inputDefinitions", {}).get("parameters", {})
    out: dict[str, dict[str, str]] = {}
    for name, spec in platform.get("executors", {}).items():
        for mount in spec.get("pvcMount", []):
            claim = mount.get("constant") or mount.get("pvcName")
            if claim is None:
                param = mount["componentInputParameter"]
                claim = (arguments or {}).get(param, params[param].get("defaultValue"))
            out.setdefault(executor_function(executors[name]), {})[str(claim)] = mount["mountPath"]
    return out


def without_tasks(ir: dict[str, Any], drop: set[str]) -> dict[str, Any]:
    """The IR with some root tasks removed (e.g. a cluster-only deploy step)."""
    tasks = ir["root"]["dag"]["tasks"]
    for name in drop:
        del tasks[name]
    for task in tasks.values():
        deps = [d for d in task.get("dependentTasks", []) if d not in drop]
        if "dependentTasks" in task:
            task["dependentTasks"] = deps
    return ir


@contextmanager
def podman_steps(
    ir: dict[str, Any],
    arguments: dict[str, Any],
    volumes: dict[str, Path],
    logs: Path,
    extra: list[str] | None = None,
) -> Iterator[Any]:
    """Patch kfp.local's Docker task handler to start each step with podman.

    Args:
        ir: The compiled pipeline (for each step's PVC mounts).
        arguments: The run's arguments (PVC names can be parameters).
        volumes: Host directory per PVC name (the claim), mounted where the IR says.
        logs: Directory for one log file per step.
        extra: More ``podman run`` options (e.g. a read-only data mount).

    Yields:
        The runner to pass to ``kfp.local.init``.
    """
    from kfp import local
    from kfp.local import docker_task_handler, status

    mounts = pvc_mounts(ir, arguments)
    logs.mkdir(parents=True, exist_ok=True)

    def run(handler: Any) -> Any:
        cmd = handler.full_command
        function = cmd[cmd.index("--function_to_execute") + 1]
        # Outputs are written by the container's user; the orchestrator made the folders as root.
        subprocess.run(["chmod", "-R", "a+rwX", handler.pipeline_root], check=True)
        opts = [
            "--rm",
            "--network=host",
            f"--user={UID}:{UID}",
            "--read-only",
            "--tmpfs=/tmp:rw,size=2g,mode=1777",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            f"--volume={handler.pipeline_root}:{handler.pipeline_root}:rw",
            *(extra or []),
        ]
        for claim, path in mounts.get(function, {}).items():
            opts.append(f"--volume={volumes[claim]}:{path}:rw")
        log = logs / f"{function}.log"
        with log.open("wb") as fh:
            rc = subprocess.run(
                ["podman", "run", *opts, handler.image, *cmd], stdout=fh, stderr=subprocess.STDOUT
            ).returncode
        print(f"{function}: exit {rc}, log {log}")
        return status.Status.SUCCESS if rc == 0 else status.Status.FAILURE

    original = docker_task_handler.DockerTaskHandler.run
    docker_task_handler.DockerTaskHandler.run = run  # type: ignore[method-assign]
    try:
        # DockerRunner's only check is that the `docker` SDK imports; no engine is used here.
        yield object.__new__(local.DockerRunner)
    finally:
        docker_task_handler.DockerTaskHandler.run = original  # type: ignore[method-assign]


def load_ir(path: Path) -> dict[str, Any]:
    """The compiled pipeline YAML as a dict (first document: the pipeline spec)."""
    docs = list(yaml.safe_load_all(path.read_text()))
    ir = dict(docs[0])
    if len(docs) > 1 and docs[1]:
        ir["platforms"] = docs[1].get("platforms", docs[1])
    return ir


def step_images(ir: dict[str, Any]) -> set[str]:
    """Every image the compiled steps run."""
    return {e["container"]["image"] for e in ir["deploymentSpec"]["executors"].values()}


def log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of a step log, for assertion messages."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def chown_for_pods(path: Path) -> Path:
    """Make a host directory writable by the pods' non-root user, as an fsGroup would."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, UID, UID)
    return path


SAFE_NAME = re.compile(r"[^a-z0-9-]+")
