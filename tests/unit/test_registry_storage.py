"""The registry reaches every step and pod: submissions carry the configured registry, deploy
points KServe at the SavedModel on the registry PVC, the cluster config names the mounted PVC."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from components.deploy.core import deploy
from mlops.cli import main
from mlops.config import PlatformConfig
from mlops.errors import DataError
from mlops.registry import PRODUCTION, Lineage, ModelRegistry, ModelVersion, serving_uri
from mlops.submit import SubmitPlan, submit, submit_arguments

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
MODEL = "flight-delay"


class FakeKfpClient:
    """Records what a submission asks of ``kfp.Client``; the pipeline and experiment are new."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _record(self, call: str, **kwargs: Any) -> None:
        self.calls.append((call, kwargs))

    def get_pipeline_id(self, name: str) -> None:
        self._record("get_pipeline_id", name=name)

    def upload_pipeline(self, package: str, pipeline_name: str) -> SimpleNamespace:
        self._record("upload_pipeline", package=package, pipeline_name=pipeline_name)
        return SimpleNamespace(pipeline_id="p-1")

    def list_pipeline_versions(self, pipeline_id: str, page_size: int) -> SimpleNamespace:
        self._record("list_pipeline_versions", pipeline_id=pipeline_id)
        return SimpleNamespace(pipeline_versions=[])

    def upload_pipeline_version(self, package: str, **kwargs: Any) -> SimpleNamespace:
        self._record("upload_pipeline_version", package=package, **kwargs)
        return SimpleNamespace(pipeline_version_id="v-1")

    def create_experiment(self, name: str) -> SimpleNamespace:
        self._record("create_experiment", name=name)
        return SimpleNamespace(experiment_id="e-1")

    def run_pipeline(self, **kwargs: Any) -> SimpleNamespace:
        self._record("run_pipeline", **kwargs)
        return SimpleNamespace(run_id="r-1")

    def create_recurring_run(self, **kwargs: Any) -> SimpleNamespace:
        self._record("create_recurring_run", **kwargs)
        return SimpleNamespace(recurring_run_id="rr-1")

    def sent(self, name: str) -> dict[str, Any]:
        """The keyword arguments of the one call named ``name``."""
        (kwargs,) = [kw for n, kw in self.calls if n == name]
        return kwargs


def test_submit_plan_from_config_carries_the_registry(tmp_path: Path) -> None:
    cfg = PlatformConfig(registry_uri="/mnt/registry", eval_fraction=0.25)
    plan = SubmitPlan("flight-delay-training", "v-abc", "exp", "run", tmp_path / "p.yaml",
                      submit_arguments(cfg, "2013-03", "2013-04"))  # fmt: skip
    client = FakeKfpClient()
    assert submit(client, plan)["run_id"] == "r-1"
    params = client.sent("run_pipeline")["params"]
    assert params == {"first_span": "2013-03", "last_span": "2013-04",
                      "eval_fraction": 0.25, "registry_uri": "/mnt/registry"}  # fmt: skip


def test_submit_arguments_flags_override_and_unset_settings_keep_cluster_defaults() -> None:
    cfg = PlatformConfig(registry_uri="gs://bucket/registry", feature_repo=Path("/opt/fr"))
    args = submit_arguments(cfg, "2013-01", "2013-02", {"registry_uri": "/mnt/registry"})
    assert args["registry_uri"] == "/mnt/registry"
    assert args["feature_repo"] == "/opt/fr"
    # Not set in the config file: the pipeline's cluster defaults apply, not local paths.
    assert "registry_uri" not in submit_arguments(PlatformConfig(), "2013-01", "2013-02")
    assert "feature_repo" not in submit_arguments(PlatformConfig(), "2013-01", "2013-02")


def test_submit_refuses_a_relative_registry() -> None:
    # A relative registry lands inside each step's own pod and vanishes with it.
    with pytest.raises(DataError, match="relative"):
        submit_arguments(PlatformConfig(registry_uri="registry"), "2013-01", "2013-02")


def test_cli_submit_sends_the_config_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlops.submit

    client = FakeKfpClient()
    monkeypatch.setattr(mlops.submit, "make_client", lambda *a: client)
    # The cluster config of manifests/base, as the CronJob mounts it.
    config = ROOT / "manifests" / "base" / "mlops.yaml"
    argv = ["--config", str(config), "submit", "--package", str(tmp_path / "p.yaml"),
            "--through-month", "4", "--param", "min_slice_count=50"]  # fmt: skip
    assert main(argv) == 0
    params = client.sent("run_pipeline")["params"]
    assert params["registry_uri"] == "/mnt/registry"
    assert params["feature_repo"] == "/opt/flight-delay/feature_repo"
    assert (params["first_span"], params["last_span"]) == ("2013-03", "2013-04")
    assert params["min_slice_count"] == "50"


@pytest.mark.parametrize("config", ["base/mlops.yaml", "overlays/dev/patches/mlops.yaml",
                                    "overlays/prod/patches/mlops.yaml"])  # fmt: skip
def test_cluster_configs_name_the_mounted_registry(config: str) -> None:
    raw = yaml.safe_load((ROOT / "manifests" / config).read_text())
    assert PlatformConfig(**raw).registry_uri == "/mnt/registry"


def test_serving_uri_maps_a_version_to_the_kserve_pvc_uri() -> None:
    version = ModelVersion(MODEL, 3, "/mnt/registry/flight-delay/versions/3", Lineage())
    assert serving_uri(version, "pvc://flight-delay-registry") == (
        "pvc://flight-delay-registry/flight-delay/versions/3/model"
    )
    assert serving_uri(version, "pvc://flight-delay-registry/") == serving_uri(
        version, "pvc://flight-delay-registry"
    )
    # No serving root: KServe reads the registry URI itself (object storage).
    remote = ModelVersion(MODEL, 3, "gs://b/registry/flight-delay/versions/3", Lineage())
    assert serving_uri(remote) == "gs://b/registry/flight-delay/versions/3/model"


def test_chart_default_storage_uri_is_a_saved_model() -> None:
    values = yaml.safe_load((ROOT / "charts" / "flight-delay" / "values.yaml").read_text())
    assert values["model"]["storageUri"] == (
        "pvc://flight-delay-registry/flight-delay/versions/1/model"
    )


class FakeRollout:
    """Stands in for ``ClusterRollout``: records the canary it is asked to start."""

    started: list[tuple[int, str]] = []

    @classmethod
    def from_kubeconfig(cls, **kwargs: Any) -> FakeRollout:
        return cls()

    def start(self, canary_version: int, storage_uri: str) -> dict[str, Any]:
        self.started.append((canary_version, storage_uri))
        return {}


def _fake_model(path: Path) -> Path:
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"graph")
    return path


def test_cluster_deploy_starts_the_canary_on_the_registry_pvc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlops.rollout

    monkeypatch.setattr(mlops.rollout, "ClusterRollout", FakeRollout)
    FakeRollout.started = []
    registry = ModelRegistry(str(tmp_path / "registry"))
    model = _fake_model(tmp_path / "model")
    first = registry.register(MODEL, model, Lineage(blessed=True), {"blessed": True})
    registry.set_alias(MODEL, PRODUCTION, first.version)
    second = registry.register(MODEL, model, Lineage(blessed=True), {"blessed": True})

    result = deploy({"pushed": True, "version": second.version}, registry.uri, MODEL,
                    "cluster", serving_root="pvc://flight-delay-registry")  # fmt: skip
    assert result.action == "canary_started"
    assert FakeRollout.started == [(2, "pvc://flight-delay-registry/flight-delay/versions/2/model")]
