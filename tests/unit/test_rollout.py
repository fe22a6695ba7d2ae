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
        {"carrier=UA": positive, "carrier=other": 0.2, "origin=JFK": 0.22},
        {"carrier=UA": score, "carrier=other": 0.25, "origin=JFK": 0.26},
        {"carrier=UA": 600, "carrier=other": 400, "origin=JFK": 1000},
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
    # No latency samples is no breach, and no evidence either: hold, never promote.
    assert decide(stats("2", p99=math.nan), stats("1"), TH).decision == "hold"


# -- missing evidence holds, naming the version, the slice and the metric ------------------------


def test_no_latency_series_holds_naming_the_version_and_metric() -> None:
    a = decide(stats("2", p99=math.nan), stats("1"), TH)
    assert a.decision == "hold"
    assert a.reasons == [
        "missing evidence: canary version 2 has no p99 latency "
        "(flight_delay_stage_latency_seconds stage=total)"
    ]
    b = decide(stats("2"), stats("1", p99=math.nan), TH)
    assert b.decision == "hold" and "stable version 1 has no p99 latency" in b.reasons[0]


def test_no_request_series_holds() -> None:
    a = decide(stats("2", requests=math.nan), stats("1"), TH)
    assert a.decision == "hold"
    assert a.reasons == [
        "missing evidence: canary version 2 has no request series (flight_delay_requests_total)"
    ]


def test_a_slice_absent_for_one_version_holds_naming_it() -> None:
    canary = stats("2")
    for d in (canary.slice_requests, canary.slice_positive_rate, canary.slice_mean_score):
        d.pop("carrier=UA")
    a = decide(canary, stats("1"), TH)
    assert a.decision == "hold", a.reasons
    assert a.reasons == [
        "missing evidence: canary version 2 has no predictions in slice carrier=UA"
    ]
    # The same when the stable version lacks it: a slice new to the canary is not compared blind.
    b = decide(stats("1"), canary, TH)
    assert b.reasons == [
        "missing evidence: stable version 2 has no predictions in slice carrier=UA"
    ]


def test_a_slice_metric_absent_for_one_version_holds_naming_the_metric() -> None:
    canary = stats("2")
    del canary.slice_mean_score["origin=JFK"]
    a = decide(canary, stats("1"), TH)
    assert a.decision == "hold"
    assert a.reasons == ["missing evidence: canary version 2 has no mean score in slice origin=JFK"]


def test_too_few_predictions_in_a_gated_slice_holds() -> None:
    canary = stats("2")
    canary.slice_requests.update({"carrier=UA": 15, "carrier=other": 985})
    a = decide(canary, stats("1"), TH.model_copy(update={"min_slice_requests": 20}))
    assert a.decision == "hold"
    assert a.reasons == [
        "not enough traffic yet: canary version 2 has 15 predictions in slice carrier=UA (need 20)"
    ]


def test_a_rare_slice_neither_gates_nor_hides_a_breach() -> None:
    canary, stable = stats("2"), stats("1")
    for vs in (canary, stable):
        vs.slice_requests.update({"carrier=VX": 3, "carrier=other": 397})
        vs.slice_positive_rate["carrier=VX"] = vs.slice_mean_score["carrier=VX"] = 0.1
    # 3 of 1000 predictions (0.3 %, under min_slice_share) in both: not gated, not compared.
    assert decide(canary, stable, TH).decision == "promote"
    # Rare for the stable version but common for the canary: gated, so it must have evidence.
    canary.slice_requests.update({"carrier=VX": 300, "carrier=other": 100})
    a = decide(canary, stable, TH)
    assert a.decision == "hold"
    assert a.reasons == [
        "not enough traffic yet: stable version 1 has 3 predictions in slice carrier=VX (need 20)"
    ]


def test_no_slices_at_all_holds() -> None:
    canary, stable = stats("2"), stats("1")
    canary.slice_requests.clear()
    stable.slice_requests.clear()
    a = decide(canary, stable, TH)
    assert a.decision == "hold" and "neither version has per-slice predictions" in a.reasons[0]


def test_a_breach_rolls_back_even_when_other_evidence_is_missing() -> None:
    a = decide(stats("2", error_rate=0.05, p99=math.nan), stats("1"), TH)
    assert a.decision == "rollback"


def test_thresholds_are_typed_config_refusing_unknown_and_bad_fields() -> None:
    from pydantic import ValidationError

    th = RolloutThresholds()
    assert (th.min_requests, th.min_slice_requests, th.max_hold_seconds) == (200, 20, 3600.0)
    with pytest.raises(ValidationError, match="min_slice_request"):
        RolloutThresholds(min_slice_request=5)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="min_slice_requests"):
        RolloutThresholds(min_slice_requests=0)
    with pytest.raises(ValidationError, match="window"):
        RolloutThresholds(window="five minutes")


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
