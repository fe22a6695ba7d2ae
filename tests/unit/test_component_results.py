"""Each result's ``to_metadata()`` is read back by its ``from_metadata()``: the one place the
artifact metadata keys are spelled, for the components that write them and the runner that
reads them."""

from __future__ import annotations

import pytest

from components.deploy.core import DeployResult, check_mode
from components.evaluate.core import BlessingMetadata
from components.push.core import PushResult, resolved_hyperparameters
from components.validate.core import Anomaly, Verdict, VerdictMetadata

pytestmark = pytest.mark.unit


def test_verdict_metadata_round_trips() -> None:
    verdict = Verdict(
        ok=False,
        anomalies=[Anomaly("carrier", "unexpected values", "ZZ"), Anomaly("temp", "range", "x")],
        drifted=["temp", "dewp"],
        baseline="/registry/flight-delay/3/statistics",
    )
    meta = verdict.to_metadata()
    assert meta == {"ok": False, "anomalies": 2, "drifted": "temp,dewp",
                    "summary": "carrier: ZZ; temp: x",
                    "baseline": "/registry/flight-delay/3/statistics"}  # fmt: skip
    back = VerdictMetadata.from_metadata(meta)
    assert back == VerdictMetadata(False, 2, ["temp", "dewp"], "carrier: ZZ; temp: x",
                                   "/registry/flight-delay/3/statistics")  # fmt: skip
    assert VerdictMetadata.from_metadata({"rows": 3}) is None


def test_blessing_metadata_round_trips() -> None:
    first = BlessingMetadata(True, None, [], ["ok overall AUC", "note first model"])
    assert first.to_metadata()["baseline_version"] == 0
    assert BlessingMetadata.from_metadata(first.to_metadata()) == first
    regressed = BlessingMetadata(False, 3, ["carrier=UA", "origin=LGA"], ["FAIL slice"])
    assert BlessingMetadata.from_metadata(regressed.to_metadata()) == regressed
    assert BlessingMetadata.from_metadata({}) is None


def test_push_and_deploy_results_round_trip() -> None:
    pushed = PushResult(True, 4, "pushed version 4", ["candidate"], "/r/m/4/model", reused=True)
    # Aliases are not in the metadata; everything else comes back, with KFP's float numbers.
    meta = {k: float(v) if k == "version" else v for k, v in pushed.to_metadata().items()}
    assert PushResult.from_metadata(meta) == PushResult(
        True, 4, "pushed version 4", [], "/r/m/4/model", reused=True
    )
    refused = PushResult(False, None, "not pushed: data validation failed")
    assert PushResult.from_metadata(refused.to_metadata()) == refused
    held = DeployResult("held", 5, 4, ["too few requests", "hold"])
    assert DeployResult.from_metadata(held.to_metadata()) == held
    none = DeployResult("none", None, None, [])
    assert DeployResult.from_metadata(none.to_metadata()) == none
    assert PushResult.from_metadata({}) is None and DeployResult.from_metadata({}) is None


def test_push_prefers_the_trainers_resolved_hyperparameters() -> None:
    resolved = resolved_hyperparameters(
        '{"epochs": 3}', {"hyperparameters": '{"epochs": 5, "seed": 1}'}
    )
    assert resolved == {"epochs": 5, "seed": 1}
    assert resolved_hyperparameters("", {}) == {}


def test_deploy_mode_is_checked() -> None:
    assert check_mode("local") == "local"
    with pytest.raises(ValueError, match="deploy_mode must be"):
        check_mode("canary")
