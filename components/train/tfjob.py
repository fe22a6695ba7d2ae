"""The train step in the cluster with several workers: a Kubeflow Training Operator TFJob.

The step builds a TFJob of ``train_workers`` Worker replicas (same image, ``gpu_count`` GPUs
each, the registry PVC mounted), creates it with the ``kubernetes`` client, waits for its
``Succeeded`` or ``Failed`` condition and prints every state change into the step's log. The
operator gives each pod a ``TF_CONFIG`` naming all workers; they run
``python -m components.train.workers`` (see ``components.train.workers``).

A TFJob's pods cannot see KFP's artifact paths, so the step stages its inputs on the shared
volume (``<mount>/.train/<job>/``), the chief writes the model, logs and result there, and the
step copies them into its output artifacts and removes the staging directory. On failure the
error carries the failed condition's message and the tail of every worker pod's log; on timeout
it names the job, which it deletes so it holds no GPUs.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from components.train.core import TrainResult
from components.train.workers import RESULT_FILE, WORKER_MODULE, worker_args

GROUP = "kubeflow.org"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "TFJob"
PLURAL = "tfjobs"
# The Training Operator finds the TensorFlow container (and its port) by this name.
CONTAINER_NAME = "tensorflow"
# The label the operator puts on a job's pods.
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
STAGING_DIR = ".train"
TERMINAL = ("Succeeded", "Failed")


class TFJobError(RuntimeError):
    """The TFJob failed, could not be created, or did not finish in time; the message says why."""


def tfjob_manifest(
    name: str,
    namespace: str,
    image: str,
    workers: int,
    args: list[str],
    pvc: str,
    mount_path: str,
    gpu_count: int = 0,
    gpu_resource: str = "nvidia.com/gpu",
    cpu: str = "4",
    memory: str = "16G",
    backoff_limit: int = 3,
) -> dict[str, Any]:
    """A TFJob of ``workers`` Worker replicas running the training worker module.

    Args:
        name: The job's name (DNS-1123).
        namespace: Its namespace (the pipeline run's: the PVC lives there).
        image: The component image (it holds the worker module).
        workers: Worker replicas; worker 0 is the chief.
        args: The worker module's arguments (:func:`components.train.workers.worker_args`).
        pvc: The ReadWriteMany PVC with the staged inputs and the outputs.
        mount_path: Where it is mounted (the paths in ``args`` are under it).
        gpu_count: GPUs per worker (``gpu_resource`` limit); 0 trains on CPU.
        gpu_resource: The extended resource name of the GPUs.
        cpu: CPU limit per worker.
        memory: Memory limit per worker.
        backoff_limit: Restarts of the job before it is Failed; a restarted worker resumes
            from the last epoch's ``BackupAndRestore`` checkpoint on the PVC.

    Raises:
        ValueError: ``workers`` < 1 or ``gpu_count`` < 0.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if gpu_count < 0:
        raise ValueError(f"gpu_count must be >= 0, got {gpu_count}")
    limits: dict[str, str] = {"cpu": cpu, "memory": memory}
    if gpu_count:
        limits[gpu_resource] = str(gpu_count)
    container = {
        "name": CONTAINER_NAME,
        "image": image,
        "command": ["python", "-m", WORKER_MODULE],
        "args": args,
        "resources": {"limits": limits},
        "volumeMounts": [{"name": "registry", "mountPath": mount_path}],
    }
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/component": "train"},
        },
        "spec": {
            "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": backoff_limit},
            "tfReplicaSpecs": {
                "Worker": {
                    "replicas": workers,
                    "restartPolicy": "OnFailure",
                    "template": {
                        "spec": {
                            "containers": [container],
                            "volumes": [
                                {"name": "registry", "persistentVolumeClaim": {"claimName": pvc}}
                            ],
                        }
                    },
                }
            },
        },
    }


def job_state(obj: dict[str, Any]) -> tuple[str, str]:
    """The job's latest true condition as ``(type, message)``; ``("Pending", "")`` before any."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    true = [c for c in conditions if str(c.get("status")) == "True"]
    if not true:
        return "Pending", ""
    # A terminal condition wins over a Running one that is left true beside it.
    for kind in TERMINAL:
        for cond in true:
            if cond.get("type") == kind:
                return kind, str(cond.get("message") or "")
    last = true[-1]
    return str(last.get("type")), str(last.get("message") or "")


def worker_logs(core: Any, namespace: str, name: str, tail_lines: int = 50) -> dict[str, str]:
    """The last lines of each of the job's pods' logs, by pod name ('' where none is readable)."""
    from kubernetes.client.exceptions import ApiException

    pods = core.list_namespaced_pod(namespace, label_selector=f"{JOB_NAME_LABEL}={name}")
    logs: dict[str, str] = {}
    for pod in pods.items:
        pod_name = pod.metadata.name
        try:
            logs[pod_name] = core.read_namespaced_pod_log(
                pod_name, namespace, container=CONTAINER_NAME, tail_lines=tail_lines
            )
        except ApiException as err:
            logs[pod_name] = f"(no log: HTTP {err.status} {err.reason})"
    return logs


def run_tfjob(
    custom: Any,
    core: Any,
    manifest: dict[str, Any],
    timeout_s: float,
    poll_s: float = 10.0,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Create the TFJob, wait until it succeeds, and return its last state.

    Args:
        custom: A ``kubernetes.client.CustomObjectsApi``.
        core: A ``kubernetes.client.CoreV1Api`` (worker pod logs on failure).
        manifest: From :func:`tfjob_manifest`.
        timeout_s: How long to wait for a terminal condition.
        poll_s: Seconds between status reads.
        say: Where state changes are reported (the step's log).

    Raises:
        TFJobError: Creation refused, the job Failed (its message and the workers' log tails),
            or no terminal condition within ``timeout_s`` (the job is deleted).
    """
    from kubernetes.client.exceptions import ApiException

    meta = manifest["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    try:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    except ApiException as err:
        raise TFJobError(
            f"TFJob {namespace}/{name} could not be created: HTTP {err.status} {err.reason}"
            f" {_message(err)} (is the Training Operator installed, and may the pipeline's"
            " service account create tfjobs?)"
        ) from err
    say(f"TFJob {namespace}/{name}: created, {_replicas(manifest)} workers")
    deadline = time.monotonic() + timeout_s
    seen = ""
    while True:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        state, message = job_state(obj)
        if state != seen:
            say(f"TFJob {namespace}/{name}: {state}" + (f" ({message})" if message else ""))
            seen = state
        if state == "Succeeded":
            return obj
        if state == "Failed":
            logs = worker_logs(core, namespace, name)
            tails = "".join(f"\n--- {pod} ---\n{text}" for pod, text in sorted(logs.items()))
            raise TFJobError(f"TFJob {namespace}/{name} failed: {message}{tails}")
        if time.monotonic() >= deadline:
            _delete(custom, namespace, name)
            raise TFJobError(
                f"TFJob {namespace}/{name} did not finish within {timeout_s:.0f}s (last state:"
                f" {state}); it was deleted"
            )
        time.sleep(poll_s)


def _replicas(manifest: dict[str, Any]) -> int:
    return int(manifest["spec"]["tfReplicaSpecs"]["Worker"]["replicas"])


def _message(err: Any) -> str:
    try:
        return str(json.loads(err.body).get("message", ""))
    except (TypeError, ValueError, AttributeError):
        return ""


def _delete(custom: Any, namespace: str, name: str) -> None:
    from kubernetes.client.exceptions import ApiException

    # The timeout is the error to report; a job left behind is named in it.
    with contextlib.suppress(ApiException):
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def train_with_tfjob(
    workers: int,
    graph_dir: Path,
    examples_dir: Path,
    model_dir: Path,
    log_dir: Path,
    hyperparameters: str,
    *,
    namespace: str,
    image: str,
    pvc: str,
    mount_path: str,
    gpu_count: int,
    gpu_resource: str,
    timeout_s: float,
    custom: Any,
    core: Any,
    poll_s: float = 10.0,
) -> TrainResult:
    """Stage the inputs on the PVC, run the TFJob, copy the chief's outputs into the artifacts.

    Args:
        workers: Worker replicas.
        graph_dir: The transform graph artifact.
        examples_dir: The transformed examples artifact.
        model_dir: The model output artifact.
        log_dir: The TensorBoard logs output artifact.
        hyperparameters: JSON of ``HyperParameters``.
        namespace: The pipeline run's namespace.
        image: The component image.
        pvc: The ReadWriteMany PVC mounted at ``mount_path`` here and in the workers.
        mount_path: Its mount path.
        gpu_count: GPUs per worker.
        gpu_resource: Their extended resource name.
        timeout_s: How long the job may run.
        custom: A ``kubernetes.client.CustomObjectsApi``.
        core: A ``kubernetes.client.CoreV1Api``.
        poll_s: Seconds between status reads.

    Raises:
        TFJobError: See :func:`run_tfjob`; the staging directory is kept for inspection then.
    """
    name = f"train-{uuid.uuid4().hex[:12]}"
    stage = Path(mount_path) / STAGING_DIR / name
    shutil.copytree(graph_dir, stage / "graph")
    shutil.copytree(examples_dir, stage / "examples")
    args = worker_args(str(stage / "graph"), str(stage / "examples"), str(stage / "model"),
                       str(stage / "logs"), hyperparameters, str(stage / "checkpoints"),
                       str(stage / RESULT_FILE))  # fmt: skip
    manifest = tfjob_manifest(name, namespace, image, workers, args, pvc, mount_path,
                              gpu_count=gpu_count, gpu_resource=gpu_resource)  # fmt: skip
    run_tfjob(custom, core, manifest, timeout_s, poll_s)
    shutil.copytree(stage / "model", model_dir, dirs_exist_ok=True)
    shutil.copytree(stage / "logs", log_dir, dirs_exist_ok=True)
    result = TrainResult(**json.loads((stage / RESULT_FILE).read_text()))
    shutil.rmtree(stage)
    return result


# Present in every pod with a service account token: the step runs in a cluster.
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_TIMEOUT_S = 6 * 3600.0


def train_on_workers(
    workers: int,
    graph_dir: Path,
    examples_dir: Path,
    model_dir: Path,
    log_dir: Path,
    hyperparameters: str,
    *,
    pvc: str,
    mount_path: str,
    gpu_count: int,
    gpu_resource: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> TrainResult:
    """Train with ``workers`` workers: a TFJob in a cluster, processes on loopback elsewhere.

    In a pod (a service account namespace file exists), the TFJob goes to the pod's namespace
    and uses the pod's own image (read from the API; the component image constant if that
    read is refused). Elsewhere (``kfp.local``), :func:`run_local_workers` runs the same worker
    module with the same ``TF_CONFIG`` on 127.0.0.1; GPUs are the local ones.
    """
    if not SERVICE_ACCOUNT_NAMESPACE.is_file():
        import tempfile

        from components.train.workers import run_local_workers

        with tempfile.TemporaryDirectory(prefix="train-workers-") as work:
            return run_local_workers(workers, graph_dir, examples_dir, model_dir, log_dir,
                                     hyperparameters, Path(work), timeout_s)  # fmt: skip
    from kubernetes import client, config

    config.load_incluster_config()
    namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    core = client.CoreV1Api()
    return train_with_tfjob(
        workers, graph_dir, examples_dir, model_dir, log_dir, hyperparameters,
        namespace=namespace, image=own_image(core, namespace), pvc=pvc, mount_path=mount_path,
        gpu_count=gpu_count, gpu_resource=gpu_resource, timeout_s=timeout_s,
        custom=client.CustomObjectsApi(), core=core,
    )  # fmt: skip


def own_image(core: Any, namespace: str) -> str:
    """The image of this pod's main container (``mlops compile --image`` may have changed it)."""
    import socket

    from kubernetes.client.exceptions import ApiException

    from components.images import COMPONENT_IMAGE

    try:
        pod = core.read_namespaced_pod(socket.gethostname(), namespace)
    except ApiException as err:
        print(f"cannot read this pod ({err.status} {err.reason}); workers use {COMPONENT_IMAGE}")
        return COMPONENT_IMAGE
    containers = {c.name: c.image for c in pod.spec.containers}
    # KFP v2 runs the component in the container named "main".
    return containers.get("main") or next(iter(containers.values()))
