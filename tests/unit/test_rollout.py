"""Rollout decisions from version statistics, traffic steps and InferenceService patches."""

from __future__ import annotations

import math

import pytest

from mlops.rollout import (
    RolloutThresholds,
    VersionStats,
    canary_patch,
    decide,
    next_traffic_percent,
)

pytestmark = pytest.mark.unit

TH = RolloutThresholds(min_requests=100)


def stats(
    version: str,
    requests: float = 1000,
    error_rate: float = 0.001,
    p99: float = 0.01,
    positive: float = 0.2,
    score: float = 0.25,
) -> VersionStats:
    return VersionStats(
        version, requests, error_rate, p99,
        {"carrier=UA": positive, "origin=JFK": 0.22},
        {"carrier=UA": score, "origin=JFK": 0.26},
    )  # fmt: skip


def test_good_canary_is_promoted() -> None:
    a = decide(stats("2"), stats("1"), TH)
    assert a.decision == "promote"
    assert "within every threshold" in a.reasons[0]


def test_error_rate_breach_rolls_back() -> None:
    a = decide(stats("2", error_rate=0.05), stats("1"), TH)
    assert a.decision == "rollback"
    assert any("error rate 5.000%" in r for r in a.reasons)


def test_slice_positive_rate_jump_rolls_back_naming_the_slice() -> None:
    a = decide(stats("2", positive=0.6), stats("1"), TH)
    assert a.decision == "rollback"
    assert any(r.startswith("slice carrier=UA: positive rate 0.600") for r in a.reasons)
    assert not any("origin=JFK" in r for r in a.reasons)


def test_latency_breach_and_too_little_traffic() -> None:
    assert decide(stats("2", p99=0.05), stats("1", p99=0.01), TH).decision == "rollback"
    held = decide(stats("2", requests=20), stats("1"), TH)
    assert held.decision == "hold" and "not enough traffic" in held.reasons[0]
    # No latency samples is not a breach.
    assert decide(stats("2", p99=math.nan), stats("1"), TH).decision == "promote"


def test_traffic_steps() -> None:
    assert next_traffic_percent(None, "hold") == 10
    assert next_traffic_percent(10, "promote") == 50
    assert next_traffic_percent(50, "promote") is None  # next step is 100: remove the field
    assert next_traffic_percent(50, "rollback") == 0
    assert next_traffic_percent(50, "hold") == 50


def test_canary_patch_sets_and_removes_the_field() -> None:
    isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "flight-delay"},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "tensorflow"},
                                             "storageUri": "gs://r/v/1"}}}}  # fmt: skip
    started = canary_patch(isvc, "gs://r/v/2", 10)
    assert started["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert started["spec"]["predictor"]["model"]["storageUri"] == "gs://r/v/2"
    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]  # input untouched
    promoted = canary_patch(started, None, None)
    assert "canaryTrafficPercent" not in promoted["spec"]["predictor"]
    assert canary_patch(started, None, 0)["spec"]["predictor"]["canaryTrafficPercent"] == 0
    with pytest.raises(ValueError, match=r"0\.\.100"):
        canary_patch(isvc, None, 120)


def test_deploy_does_nothing_without_a_push_and_promotes_a_first_model(tmp_path) -> None:
    from components.deploy.core import deploy
    from mlops.registry import Lineage, ModelRegistry

    registry = ModelRegistry(str(tmp_path / "reg"))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "saved_model.pb").write_bytes(b"x")
    v = registry.register("fd", tmp_path / "m", Lineage(blessed=True), {}).version

    none = deploy({"pushed": False, "reason": "not blessed: auc"}, str(tmp_path / "reg"), "fd",
                  "local")  # fmt: skip
    assert none.action == "none" and "not blessed" in none.reasons[0]
    assert registry.find("fd", "production") is None

    first = deploy({"pushed": True, "version": v}, str(tmp_path / "reg"), "fd", "local")
    assert first.action == "promoted" and first.production_version == v
    assert registry.resolve("fd", "production").version == v
