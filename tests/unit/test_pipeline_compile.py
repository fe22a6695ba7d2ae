"""The compiled pipeline is checked in; it must match what the code compiles to today."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlops.runner import COMPILED_MONITORING, COMPILED_PIPELINE, STEPS, compile_pipeline

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = compile_pipeline(tmp_path_factory.mktemp("ir") / "pipeline.yaml")
    return yaml.safe_load(out.read_text())


def test_checked_in_yaml_is_not_stale(compiled: dict) -> None:
    golden = yaml.safe_load((ROOT / COMPILED_PIPELINE).read_text())
    assert compiled == golden, "pipelines/training_pipeline.yaml is stale: run `make compile`"


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


def test_components_do_not_pip_install_at_runtime(compiled: dict) -> None:
    # One pinned image: the component command must not install kfp or anything else.
    for executor in compiled["deploymentSpec"]["executors"].values():
        command = " ".join(executor["container"]["command"])
        assert "pip install" not in command
        assert executor["container"]["image"].startswith("ghcr.io/flight-delay-mlops/")


def test_image_can_be_set_at_compile_time(tmp_path: Path) -> None:
    out = compile_pipeline(tmp_path / "p.yaml", image="registry.example.com/fd/components:1.2")
    spec = yaml.safe_load(out.read_text())
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example.com/fd/components:1.2"}


def test_monitoring_pipeline_yaml_is_not_stale(tmp_path: Path) -> None:
    out = compile_pipeline(tmp_path / "monitoring.yaml", monitoring=True)
    compiled = yaml.safe_load(out.read_text())
    assert compiled == yaml.safe_load((ROOT / COMPILED_MONITORING).read_text()), (
        "pipelines/monitoring_pipeline.yaml is stale: run `make compile`"
    )
    assert set(compiled["root"]["dag"]["tasks"]) == {"monitor-op"}
