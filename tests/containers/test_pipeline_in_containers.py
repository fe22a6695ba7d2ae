"""The compiled pipeline's steps, each in the component image, into a registry outside them."""

from __future__ import annotations

import os

import pytest
from kfp_podman import MODEL, UID, ContainerRun, load_ir, log_tail, pvc_mounts

from mlops.registry import ModelRegistry
from tools.k8s_validate import ROOT

pytestmark = [pytest.mark.containers, pytest.mark.timeout(3000)]

STEPS = (
    "ingest_op",
    "validate_op",
    "validation_gate_op",
    "transform_op",
    "train_op",
    "evaluate_op",
    "push_op",
)


def test_steps_that_touch_the_registry_mount_its_pvc() -> None:
    """Without the mount a step writes the registry into its own pod, lost with it."""
    mounts = pvc_mounts(load_ir(ROOT / "pipelines" / "training_pipeline.yaml"))
    for step in ("validate_op", "evaluate_op", "push_op", "deploy_op"):
        assert "/mnt/registry" in mounts.get(step, {}).values(), (step, mounts)


def test_each_step_ran_in_the_component_image(container_run: ContainerRun) -> None:
    for step in STEPS:
        log = container_run.logs / f"{step}.log"
        assert log.is_file(), f"{step} never started; logs: {sorted(container_run.logs.iterdir())}"


def test_push_registered_the_model_outside_the_containers(container_run: ContainerRun) -> None:
    logs = "\n".join(
        f"== {s}\n{log_tail(container_run.logs / f'{s}.log')}"
        for s in STEPS
        if (container_run.logs / f"{s}.log").is_file()
    )
    registry = ModelRegistry(str(container_run.registry))
    versions = registry.versions(MODEL)
    assert [v.version for v in versions] == [1], logs
    version = versions[0]
    assert registry.aliases(MODEL).get("candidate") == 1
    lineage = registry.lineage(MODEL, 1)
    assert lineage.to_dict()["code_revision"] == "container-test"
    model = version.local_model_path
    assert (model / "saved_model.pb").is_file()
    # Written by the containers' non-root user, on the host's directory.
    assert os.stat(model / "saved_model.pb").st_uid == UID
