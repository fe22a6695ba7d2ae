"""The train step's TFJob: its manifest against the Training Operator SDK's types, and the
create -> wait -> outcome path through the real ``kubernetes`` client against a fake API server.

The fake (tests/fake_kube_api.py) holds custom objects and answers get/patch; here it is
extended, in this file only, with what the train step also calls: create (POST) and delete of a
TFJob, the job's pods (list by label) and their logs. Each GET of the job moves it one step along
a scripted sequence of status conditions, as the operator would between two polls. A Role with
the rules the pipeline's service account needs is enforced, as RBAC would.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_kube_api import FakeKubeAPI, _status, allowed, attributes

from components.train.tfjob import (
    API_VERSION,
    CONTAINER_NAME,
    JOB_NAME_LABEL,
    KIND,
    STAGING_DIR,
    TFJobError,
    job_state,
    own_image,
    run_tfjob,
    tfjob_manifest,
    train_with_tfjob,
)
from components.train.workers import RESULT_FILE, worker_args
from mlops.kserve_types import validate_custom_object
from tools.k8s_validate import HELM, ROOT, render_chart

pytestmark = pytest.mark.integration  # imports the real Training Operator SDK (a few seconds)

NS = "kubeflow-user"


def _pipeline_role_rules(training_jobs: bool) -> list[dict[str, Any]]:
    """The rules of the chart's pipeline Role, with ``rbac.pipeline.trainingJobs`` on (what
    multi-worker training needs) or at its default (off)."""
    if not HELM.exists():
        subprocess.run(["bash", str(ROOT / "tools" / "install-helm.sh")], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        values = None
        if training_jobs:
            values = Path(tmp) / "training-jobs-values.yaml"
            values.write_text(yaml.safe_dump({"rbac": {"pipeline": {"trainingJobs": True}}}))
        rendered = render_chart(values)
    (role,) = [
        d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Role"
        and d["metadata"]["name"].endswith("-pipeline")
    ]  # fmt: skip
    return list(role["rules"])


@pytest.fixture(scope="module")
def train_rules() -> list[dict[str, Any]]:
    """The pipeline's service account as the chart grants it for multi-worker training: a
    missing TFJob rule fails the tests that run against it."""
    return _pipeline_role_rules(training_jobs=True)


def _condition(kind: str, message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": "True", "reason": f"TFJob{kind}", "message": message,
            "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip


class FakeTrainingAPI(FakeKubeAPI):
    """FakeKubeAPI plus TFJob create/delete, pods by label and pod logs."""

    def __init__(
        self, statuses: list[list[dict[str, Any]]], logs: dict[str, str],
        rules: list[dict[str, Any]],
    ) -> None:  # fmt: skip
        super().__init__(rules)
        self.statuses = statuses  # the job's conditions after each GET, in order
        self.logs = logs  # pod name -> log text
        self.calls: list[tuple[str, str]] = []  # (method, path) of every request
        self.on_create: Any = None  # called with the created job (what its workers would do)
        self.pods: dict[str, dict[str, Any]] = {}  # pod name -> pod, for a GET by name

    def handle(self, method: str, raw_path: str, content_type: str | None,
               raw_body: bytes) -> tuple[int, dict[str, Any]]:  # fmt: skip
        parsed = urllib.parse.urlsplit(raw_path)
        query = urllib.parse.parse_qs(parsed.query)
        parts = [p for p in parsed.path.split("/") if p]
        self.calls.append((method, parsed.path))
        attrs = attributes(method, parsed.path, query)
        if not allowed(self.rules or [], attrs):
            return 403, _status(403, "Forbidden", f"{attrs.verb} {attrs.resource} is forbidden")
        if attrs.resource == "tfjobs" and method == "POST":
            body = json.loads(raw_body)
            path = self.put_object(body, "tfjobs")
            if self.on_create:
                self.on_create(body)
            return 201, self.object(path)
        if attrs.resource == "tfjobs" and method == "GET" and attrs.name:
            with self._lock:
                obj = self.objects.get(parsed.path)
                if obj is not None and self.statuses:
                    obj["status"] = {"conditions": self.statuses.pop(0)}
        if attrs.resource == "tfjobs" and method == "DELETE":
            with self._lock:
                self.objects.pop(parsed.path, None)
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        if attrs.resource == "pods" and method == "GET" and attrs.subresource == "log":
            return 200, self.logs[attrs.name]  # type: ignore[index,return-value]
        if attrs.resource == "pods" and method == "GET" and attrs.name in self.pods:
            return 200, self.pods[attrs.name]
        if attrs.resource == "pods" and method == "GET" and attrs.name is None:
            selector = query.get("labelSelector", [""])[0]
            job = selector.split("=", 1)[1]
            items = [
                {
                    "metadata": {
                        "name": name,
                        "namespace": parts[3],
                        "labels": {JOB_NAME_LABEL: job},
                    }
                }
                for name in sorted(self.logs)
                if name.startswith(job)
            ]
            return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
        return super().handle(method, raw_path, content_type, raw_body)


@pytest.fixture()
def clients(train_rules: list[dict[str, Any]]) -> Iterator[Any]:
    """A factory: the fake server with a script, and the real clients pointed at it."""
    from kubernetes import client

    servers = []

    def make(statuses: list[list[dict[str, Any]]], logs: dict[str, str] | None = None) -> Any:
        api = FakeTrainingAPI(statuses, logs or {}, train_rules)
        servers.append(api.serve())
        servers[-1].__enter__()
        conf = client.ApiClient(client.Configuration(host=api.url))
        return api, client.CustomObjectsApi(conf), client.CoreV1Api(conf)

    yield make
    for server in servers:
        server.__exit__(None, None, None)


def _manifest(name: str = "train-abc", workers: int = 2, gpus: int = 1) -> dict[str, Any]:
    at = "/mnt/registry/.train/x"
    args = worker_args(f"{at}/graph", f"{at}/examples", f"{at}/model", f"{at}/logs", "{}",
                       f"{at}/checkpoints", f"{at}/result.json")  # fmt: skip
    return tfjob_manifest(name, NS, "registry.local/components:1", workers, args,
                          "flight-delay-registry", "/mnt/registry", gpu_count=gpus)  # fmt: skip


def test_the_manifest_is_a_valid_tfjob_for_the_sdk() -> None:
    from kubeflow.training.models import KubeflowOrgV1TFJob

    manifest = _manifest(workers=3, gpus=2)
    validate_custom_object(manifest, API_VERSION, KIND, KubeflowOrgV1TFJob)
    worker = manifest["spec"]["tfReplicaSpecs"]["Worker"]
    (container,) = worker["template"]["spec"]["containers"]
    assert worker["replicas"] == 3 and worker["restartPolicy"] == "OnFailure"
    assert container["name"] == CONTAINER_NAME == "tensorflow"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["volumeMounts"] == [{"name": "registry", "mountPath": "/mnt/registry"}]
    assert container["command"] == ["python", "-m", "components.train.workers"]
    cpu_only = _manifest(gpus=0)["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]
    assert "nvidia.com/gpu" not in cpu_only["containers"][0]["resources"]["limits"]


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        (("spec", "tfReplicaSpecs", "Worker", "replicas"), "2",
         r"^spec\.tfReplicaSpecs\.Worker\.replicas: expected an integer, got str"),
        (("spec", "runPolicy", "cleanPodPolicyy"), "All",
         r"^spec\.runPolicy\.cleanPodPolicyy: unknown field of KubeflowOrgV1RunPolicy"),
        (("spec", "tfReplicaSpecs", "Worker", "template", "spec", "containers"), {},
         r"^spec\.tfReplicaSpecs\.Worker\.template\.spec\.containers: expected a list"),
    ],
)  # fmt: skip
def test_a_wrong_tfjob_field_fails_with_its_path(path: tuple[str, ...], value: Any,
                                                 error: str) -> None:  # fmt: skip
    from kubeflow.training.models import KubeflowOrgV1TFJob

    manifest = _manifest()
    node = manifest
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ValueError, match=error):
        validate_custom_object(manifest, API_VERSION, KIND, KubeflowOrgV1TFJob)


def test_manifest_refuses_no_workers() -> None:
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        _manifest(workers=0)


def test_job_state_reads_the_terminal_condition_first() -> None:
    assert job_state({}) == ("Pending", "")
    running = [_condition("Created"), _condition("Running")]
    assert job_state({"status": {"conditions": running}}) == ("Running", "")
    done = [*running, _condition("Succeeded", "done")]
    assert job_state({"status": {"conditions": done}}) == ("Succeeded", "done")


def test_create_running_succeeded(clients: Any) -> None:
    created, running = [_condition("Created")], [_condition("Created"), _condition("Running")]
    api, custom, core = clients([created, running, running, [*running, _condition("Succeeded")]])
    said: list[str] = []
    obj = run_tfjob(custom, core, _manifest(), timeout_s=30, poll_s=0.01, say=said.append)
    assert job_state(obj)[0] == "Succeeded"
    job = f"TFJob {NS}/train-abc"
    assert said == [f"{job}: created, 2 workers", f"{job}: Created", f"{job}: Running",
                    f"{job}: Succeeded"]  # fmt: skip
    assert api.calls[0] == ("POST", f"/apis/kubeflow.org/v1/namespaces/{NS}/tfjobs")
    stored = api.object(f"/apis/kubeflow.org/v1/namespaces/{NS}/tfjobs/train-abc")
    assert stored["spec"] == _manifest()["spec"]


def test_failed_surfaces_the_condition_message_and_worker_logs(clients: Any) -> None:
    failed = [_condition("Created"), _condition("Failed", "TFJob train-abc has failed because 1 "
                                                          "Worker replica(s) failed.")]  # fmt: skip
    logs = {"train-abc-worker-0": "epoch 1\nResourceExhausted: OOM when allocating tensor",
            "train-abc-worker-1": "epoch 1\nUnavailable: connection reset",
            "other-worker-0": "not this job"}  # fmt: skip
    _, custom, core = clients([failed], logs)
    with pytest.raises(TFJobError) as err:
        run_tfjob(custom, core, _manifest(), timeout_s=30, poll_s=0.01, say=lambda _: None)
    text = str(err.value)
    assert text.startswith(f"TFJob {NS}/train-abc failed: TFJob train-abc has failed because 1")
    assert "--- train-abc-worker-0 ---\nepoch 1\nResourceExhausted: OOM" in text
    assert "Unavailable: connection reset" in text and "not this job" not in text


def test_timeout_names_the_job_and_deletes_it(clients: Any) -> None:
    running = [_condition("Created"), _condition("Running")]
    api, custom, core = clients([running] * 1000)
    with pytest.raises(TFJobError, match=rf"^TFJob {NS}/train-abc did not finish within 0s "
                                         r"\(last state: Running\); it was deleted"):  # fmt: skip
        run_tfjob(custom, core, _manifest(), timeout_s=0.0, poll_s=0.01, say=lambda _: None)
    assert api.calls[-1] == ("DELETE", f"/apis/kubeflow.org/v1/namespaces/{NS}/tfjobs/train-abc")
    assert not api.objects


def test_the_default_chart_grants_no_training_jobs(train_rules: list[dict[str, Any]]) -> None:
    """Least privilege: without ``rbac.pipeline.trainingJobs`` the pipeline may not create
    TFJobs or read pods; with it, create and delete only on tfjobs."""
    default = _pipeline_role_rules(training_jobs=False)
    assert not any({"tfjobs", "pods", "pods/log"} & set(r["resources"]) for r in default)
    writes = [r["resources"] for r in train_rules if {"create", "delete"} & set(r["verbs"])]
    assert writes == [["tfjobs"]]


def test_create_refused_says_what_to_check(clients: Any, train_rules: list[dict[str, Any]]) -> None:
    api, custom, core = clients([])
    api.rules = [r for r in train_rules if r["resources"] != ["tfjobs"]]
    with pytest.raises(TFJobError, match=r"could not be created: HTTP 403 .*create tfjobs"):
        run_tfjob(custom, core, _manifest(), timeout_s=5, poll_s=0.01, say=lambda _: None)


def test_train_with_tfjob_stages_inputs_and_copies_the_chiefs_outputs(
    clients: Any, tmp_path: Path
) -> None:
    mount = tmp_path / "registry"
    graph, examples = tmp_path / "graph", tmp_path / "examples"
    (graph / "transform_fn").mkdir(parents=True)
    (graph / "transform_fn" / "saved_model.pb").write_bytes(b"graph")
    examples.mkdir()
    (examples / "train-00000-of-00001.tfrecord.gz").write_bytes(b"rows")
    api, custom, core = clients([[_condition("Running")], [_condition("Succeeded")]])
    result = {"epochs_run": 2, "train_examples": 10, "examples_per_second": 1.0, "seconds": 1.0,
              "devices": ["CPU"], "mixed_precision": False, "validation_auc": 0.7,
              "validation_loss": 0.5, "logistic_validation_auc": 0.69,
              "majority_validation_accuracy": 0.6, "validation_accuracy": 0.7,
              "operating_threshold": 0.4, "validation_f1": 0.5, "hyperparameters": {},
              "workers": 2}  # fmt: skip

    def chief_runs(job: dict[str, Any]) -> None:
        # What the chief leaves on the PVC, at the paths the job's arguments name.
        args = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["args"]
        flag = dict(zip(args[::2], args[1::2], strict=True))
        assert (Path(flag["--transform-graph"]) / "transform_fn" / "saved_model.pb").is_file()
        assert (Path(flag["--examples"]) / "train-00000-of-00001.tfrecord.gz").is_file()
        Path(flag["--model"]).mkdir(parents=True)
        (Path(flag["--model"]) / "saved_model.pb").write_bytes(b"model")
        Path(flag["--logs"]).mkdir(parents=True)
        (Path(flag["--logs"]) / "events.out.tfevents.1").write_bytes(b"log")
        Path(flag["--result"]).write_text(json.dumps(result))

    api.on_create = chief_runs
    got = train_with_tfjob(
        2, graph, examples, tmp_path / "model", tmp_path / "logs", "{}", namespace=NS,
        image="img", pvc="pvc", mount_path=str(mount), gpu_count=0,
        gpu_resource="nvidia.com/gpu", timeout_s=30, custom=custom, core=core, poll_s=0.01,
    )  # fmt: skip
    assert got.workers == 2 and got.validation_auc == 0.7
    assert (tmp_path / "model" / "saved_model.pb").read_bytes() == b"model"
    assert (tmp_path / "logs" / "events.out.tfevents.1").is_file()
    assert list((mount / STAGING_DIR).iterdir()) == []  # the staging directory is removed
    assert RESULT_FILE == "result.json"


def test_workers_use_the_steps_own_image(clients: Any, train_rules: list[dict[str, Any]]) -> None:
    import socket

    from components.images import COMPONENT_IMAGE

    api, _, core = clients([])
    api.pods[socket.gethostname()] = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": socket.gethostname()},
        "spec": {"containers": [{"name": "kfp-launcher", "image": "launcher:1"},
                                {"name": "main", "image": "registry.local/components:abc"}]},
    }  # fmt: skip
    assert own_image(core, NS) == "registry.local/components:abc"
    # A service account that may not read its pod falls back to the compiled-in image.
    api.rules = [r for r in train_rules if r["resources"] != ["pods"]]
    assert own_image(core, NS) == COMPONENT_IMAGE
