"""The compiled pipeline is checked in; it must match what the code compiles to today."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from components.evaluate.config import GATE_DEFAULTS
from mlops.runner import COMPILED_MONITORING, COMPILED_PIPELINE, STEPS, compile_pipeline

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def _load(path: Path) -> list[dict]:
    """The YAML documents of a compiled pipeline: the pipeline spec, then the platform spec
    (Kubernetes settings such as PVC mounts, from kfp-kubernetes)."""
    return list(yaml.safe_load_all(path.read_text()))


@pytest.fixture(scope="module")
def compiled_docs(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return _load(compile_pipeline(tmp_path_factory.mktemp("ir") / "pipeline.yaml"))


@pytest.fixture(scope="module")
def compiled(compiled_docs: list[dict]) -> dict:
    return compiled_docs[0]


def test_checked_in_yaml_is_not_stale(compiled_docs: list[dict]) -> None:
    golden = _load(ROOT / COMPILED_PIPELINE)
    assert compiled_docs == golden, "pipelines/training_pipeline.yaml is stale: run `make compile`"


def test_registry_steps_mount_the_registry_pvc(compiled_docs: list[dict]) -> None:
    # Every step that reads or writes the registry shares one PVC, else each pushed model
    # vanishes with its pod; the default registry_uri is that mount.
    spec, platform = compiled_docs
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    mounted = {name for name, e in executors.items()
               if {"componentInputParameter": "registry_pvc", "mountPath": "/mnt/registry"}
               in e.get("pvcMount", [])}  # fmt: skip
    assert mounted == {"exec-validate-op", "exec-evaluate-op", "exec-push-op", "exec-deploy-op",
                       "exec-train-op"}  # fmt: skip
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["registry_uri"]["defaultValue"] == "/mnt/registry"
    assert params["registry_pvc"]["defaultValue"] == "flight-delay-registry"
    assert params["registry_serving_root"]["defaultValue"] == "pvc://flight-delay-registry"
    deploy = spec["root"]["dag"]["tasks"]["deploy-op"]["inputs"]["parameters"]
    assert deploy["registry_serving_root"] == {"componentInputParameter": "registry_serving_root"}


def test_dag_steps_order_and_task_settings(compiled: dict) -> None:
    tasks = compiled["root"]["dag"]["tasks"]
    assert set(tasks) == set(STEPS)
    deps = {name: set(t.get("dependentTasks", [])) for name, t in tasks.items()}
    assert "validation-gate-op" in deps["transform-op"]  # a bad span never reaches transform
    assert {"train-op", "evaluate-op", "validate-op"} <= deps["push-op"]
    train = compiled["deploymentSpec"]["executors"]["exec-train-op"]["container"]
    accel = train["resources"]["accelerator"]
    assert accel["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--gpu_count']}}"
    assert tasks["train-op"]["cachingOptions"] == {}  # caching off for training
    assert tasks["ingest-op"]["retryPolicy"]["maxRetryCount"] == 2
    params = compiled["root"]["inputDefinitions"]["parameters"]
    for name in ("first_span", "last_span", "hyperparameters", "gpu_count", "registry_uri",
                 "beam_pipeline_args", "min_auc", "max_auc_drop", "feature_repo"):  # fmt: skip
        assert name in params


def test_gate_thresholds_are_pipeline_parameters_with_eval_config_defaults(compiled: dict) -> None:
    # EvalConfig is the one home of the gate's defaults: the pipeline's and the evaluate
    # component's parameters both carry them, and every threshold reaches the component.
    params = compiled["root"]["inputDefinitions"]["parameters"]
    component = compiled["components"]["comp-evaluate-op"]["inputDefinitions"]["parameters"]
    wiring = compiled["root"]["dag"]["tasks"]["evaluate-op"]["inputs"]["parameters"]
    gate = {name: value for name, value in GATE_DEFAULTS.to_dict().items() if value is not None}
    assert set(gate) == {
        "threshold",
        "min_auc",
        "max_log_loss",
        "max_auc_drop",
        "max_log_loss_increase",
        "max_slice_auc_drop",
        "max_slice_log_loss_increase",
        "slice_max_auc_drop",
        "min_slice_count",
    }
    for name, default in gate.items():
        pipeline_name = "decision_threshold" if name == "threshold" else name
        assert params[pipeline_name]["defaultValue"] == default, name
        assert component[name]["defaultValue"] == default, name
        assert wiring[name] == {"componentInputParameter": pipeline_name}


def test_components_do_not_pip_install_at_runtime(compiled: dict) -> None:
    # One pinned image: the component command must not install kfp or anything else.
    for executor in compiled["deploymentSpec"]["executors"].values():
        command = " ".join(executor["container"]["command"])
        assert "pip install" not in command
        assert executor["container"]["image"].startswith("ghcr.io/flight-delay-mlops/")


def test_image_can_be_set_at_compile_time(tmp_path: Path) -> None:
    out = compile_pipeline(tmp_path / "p.yaml", image="registry.example.com/fd/components:1.2")
    spec, platform = _load(out)
    assert "platforms" in platform  # the PVC mounts survive the image rewrite
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example.com/fd/components:1.2"}


def test_monitoring_pipeline_yaml_is_not_stale(tmp_path: Path) -> None:
    out = compile_pipeline(tmp_path / "monitoring.yaml", monitoring=True)
    docs = _load(out)
    assert docs == _load(ROOT / COMPILED_MONITORING), (
        "pipelines/monitoring_pipeline.yaml is stale: run `make compile`"
    )
    compiled, platform = docs
    assert set(compiled["root"]["dag"]["tasks"]) == {"monitor-op"}
    # The monitor reads the request log the transformer pods write, and the registry.
    mounts = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-monitor-op"]
    assert {(m["componentInputParameter"], m["mountPath"]) for m in mounts["pvcMount"]} == {
        ("requests_pvc", "/mnt/requests"), ("registry_pvc", "/mnt/registry")}  # fmt: skip
    params = compiled["root"]["inputDefinitions"]["parameters"]
    assert params["request_log"]["defaultValue"] == "/mnt/requests"
    assert params["registry_uri"]["defaultValue"] == "/mnt/registry"
