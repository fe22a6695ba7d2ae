"""The Kustomize base and overlays, rendered by the real kubectl and validated strictly."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tools.k8s_validate import OVERLAYS, ManifestSet, overlay_names, validate_core

pytestmark = pytest.mark.integration


def _overlay(rendered: list[ManifestSet], name: str) -> list[dict]:
    return next(m for m in rendered if m.name == f"overlay-{name}").objects()


def test_there_are_dev_and_prod_overlays() -> None:
    assert overlay_names() == ["dev", "prod"]


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_overlay_renders_and_passes_kubernetes_validate_strict(
    rendered: list[ManifestSet], name: str
) -> None:
    objects = _overlay(rendered, name)
    assert {o["kind"] for o in objects} >= {"Namespace", "CronJob", "ConfigMap", "NetworkPolicy"}
    for obj in objects:
        validate_core(obj)


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_overlay_only_patches_the_base(name: str) -> None:
    kustomization = yaml.safe_load((OVERLAYS / name / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["../../base"]
    for patch in kustomization["patches"]:
        path = OVERLAYS / name / patch["path"]
        # A named patch touches a few fields of one object; it never re-declares it whole.
        assert len(path.read_text().splitlines()) < 20, path


def test_dev_overlay_moves_everything_and_suspends_the_schedule(
    rendered: list[ManifestSet],
) -> None:
    objects = _overlay(rendered, "dev")
    namespace = next(o for o in objects if o["kind"] == "Namespace")
    assert namespace["metadata"]["name"] == "flight-delay-dev"
    assert all(
        o["metadata"]["namespace"] == "flight-delay-dev" for o in objects if o is not namespace
    )
    cron = next(o for o in objects if o["kind"] == "CronJob")
    assert cron["spec"]["suspend"] is True
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/flight-delay-mlops/components:main"


def test_prod_schedule_submits_weekly_with_the_generated_config(
    rendered: list[ManifestSet],
) -> None:
    objects = _overlay(rendered, "prod")
    cron = next(o for o in objects if o["kind"] == "CronJob")
    assert cron["spec"]["schedule"] == "0 3 * * 1"
    assert "suspend" not in cron["spec"]
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["mlops"]
    assert "submit" in container["args"]
    # The CronJob mounts the hash-suffixed ConfigMap kustomize generated, and that holds a
    # config mlops.config accepts (extra keys forbidden).
    config_map = next(o for o in objects if o["kind"] == "ConfigMap")
    volume = next(v for v in pod["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    from mlops.config import PlatformConfig

    cfg = PlatformConfig(**yaml.safe_load(config_map["data"]["mlops.yaml"]))
    # The registry PVC every registry step mounts (no gcsfs in the image for a gs:// URI).
    assert cfg.registry_uri == "/mnt/registry"
    namespace = next(o for o in objects if o["kind"] == "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_base_builds_alone(tmp_path: Path) -> None:
    import subprocess

    proc = subprocess.run(
        ["kubectl", "kustomize", str(OVERLAYS.parent / "base")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "kind: CronJob" in proc.stdout
