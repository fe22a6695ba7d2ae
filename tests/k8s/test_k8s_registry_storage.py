"""The registry and request-log storage of the chart: the PVCs, what reads them and how.

The pipeline mounts the registry PVC at /mnt/registry and the request-log PVC at /mnt/requests
(tests/unit/test_pipeline_compile.py); here the chart's side: the claims it creates, the
predictor's storageUri naming a SavedModel on the registry claim, the transformer (and only it)
writing the request log to its PVC.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops.registry import Lineage, ModelVersion, serving_uri
from tools.k8s_validate import CHART, ManifestSet, render_chart

pytestmark = pytest.mark.integration


def _objects(rendered: list[ManifestSet], name: str) -> list[dict[str, Any]]:
    return next(m for m in rendered if m.name == name).objects()


def _claims(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == "PersistentVolumeClaim"}


def _isvc(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "InferenceService")


def test_default_chart_creates_both_read_write_many_claims_kept_on_uninstall(
    rendered: list[ManifestSet],
) -> None:
    claims = _claims(_objects(rendered, "chart-default"))
    assert set(claims) == {"flight-delay-registry", "flight-delay-requests"}
    for claim in claims.values():
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
        assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert "storageClassName" not in claim["spec"]  # the cluster's default class
    full = _claims(_objects(rendered, "chart-full"))
    assert {c["spec"]["storageClassName"] for c in full.values()} == {"nfs-client"}
    assert set(full) == {"ml-registry", "ml-requests"}
    # An existing registry claim, no request log: nothing to create.
    assert _claims(_objects(rendered, "chart-serving-only")) == {}


def test_storage_uri_names_a_saved_model_on_the_registry_claim(
    rendered: list[ManifestSet],
) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    claim = values["registry"]["persistence"]["claimName"]
    version = ModelVersion("flight-delay", 1, "/mnt/registry/flight-delay/versions/1", Lineage())
    # Exactly what the deploy step writes for version 1 (mlops.registry.serving_uri).
    assert values["model"]["storageUri"] == serving_uri(version, f"pvc://{claim}")
    predictor = _isvc(_objects(rendered, "chart-default"))["spec"]["predictor"]["containers"][0]
    env = {e["name"]: e.get("value") for e in predictor["env"]}
    assert env["STORAGE_URI"].endswith("/versions/1/model")


def test_only_the_transformer_mounts_the_request_log(rendered: list[ManifestSet]) -> None:
    spec = _isvc(_objects(rendered, "chart-default"))["spec"]
    transformer, predictor = spec["transformer"], spec["predictor"]
    volume = {"name": "request-log",
              "persistentVolumeClaim": {"claimName": "flight-delay-requests"}}  # fmt: skip
    assert volume in transformer["volumes"]
    container = transformer["containers"][0]
    assert {"name": "request-log", "mountPath": "/mnt/requests"} in container["volumeMounts"]
    assert "--request_log=/mnt/requests" in container["args"]
    assert "--request_log_max_mb=64" in container["args"]
    assert all(v["name"] != "request-log" for v in predictor["volumes"])
    assert all(m["name"] != "request-log" for m in predictor["containers"][0]["volumeMounts"])
    # Disabled: no volume, no mount, no log flag (the transformer then logs nothing).
    off = _isvc(_objects(rendered, "chart-serving-only"))["spec"]["transformer"]
    assert all(v["name"] != "request-log" for v in off["volumes"])
    assert not any(a.startswith("--request_log") for a in off["containers"][0]["args"])


def test_schema_refuses_a_storage_uri_that_is_not_a_versions_model(
    helm_bin: Path, tmp_path: Path
) -> None:
    # The old default pointed at the version directory; the SavedModel is in its model/.
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  storageUri: gs://b/registry/flight-delay/versions/1\n")
    with pytest.raises(RuntimeError, match="storageUri"):
        render_chart(bad, helm_bin=helm_bin)
    extra = tmp_path / "extra.yaml"
    extra.write_text("registry:\n  persistence:\n    sizee: 1Gi\n")
    with pytest.raises(RuntimeError, match="sizee"):
        render_chart(extra, helm_bin=helm_bin)
