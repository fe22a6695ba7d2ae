"""Shadow rollout with real servers: a good candidate is promoted, a bad one rolled back.

The real KServe model server serves production and candidate side by side on 127.0.0.1, a real
Prometheus scrapes it, held-out January flights are replayed to both, and the rollout analysis
decides from PromQL. The InferenceService objects the cluster controller would write for the same
decisions are checked against the KServe SDK's types.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from mlops.feast_ops import materialize
from mlops.rollout import canary_patch, next_traffic_percent
from mlops.shadow import shadow_rollout

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
MODEL = "flight-delay"
TrainingSet = Callable[[str, str], tuple[pd.DataFrame, pd.DataFrame]]


@pytest.fixture(scope="module")
def setup(prepared_repo: Path, training_set: TrainingSet,
          tmp_path_factory: pytest.TempPathFactory) -> dict:  # fmt: skip
    from model_fixtures import rollout_versions

    materialize(prepared_repo, datetime(2012, 12, 1, tzinfo=UTC), datetime(2013, 2, 1, tzinfo=UTC))
    work = tmp_path_factory.mktemp("rollout")
    registry, versions = rollout_versions(work, MODEL)
    _, evaluation = training_set("2013-01", "2013-01")
    return {"registry": registry, "versions": versions, "repo": prepared_repo,
            "replay": evaluation.sample(320, random_state=3)}  # fmt: skip


def test_good_candidate_is_promoted_then_bad_one_rolled_back(setup: dict, tmp_path: Path) -> None:
    registry, v = setup["registry"], setup["versions"]

    log = tmp_path / "requests.jsonl"
    good = shadow_rollout(registry, MODEL, v["good"], setup["repo"], setup["replay"], requests=300,
                          request_log=log)  # fmt: skip
    assert good.decision == "promote", good.reasons
    # Each flight was replayed at its moment with the real-time rows of that moment pushed
    # first: the server used them (every flight has its own rows at its scheduled departure).
    served = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(served) >= 600
    with_rt = [r for r in served if r["features"]["origin_deps_60m"] is not None]
    assert len(with_rt) == len(served), len(with_rt)
    # increase() extrapolates over a short series: what it counts is at least the minimum.
    assert good.canary.requests >= 150 and good.stable.requests >= 150
    assert registry.resolve(MODEL, "production").version == v["good"]

    bad = shadow_rollout(registry, MODEL, v["bad"], setup["repo"], setup["replay"], requests=300)
    assert bad.decision == "rollback", bad.reasons
    assert any(r.startswith("slice carrier=UA: positive rate") for r in bad.reasons)
    # Production never points at a rolled-back version.
    assert registry.resolve(MODEL, "production").version == v["good"]
    events = [e["kind"] for e in registry.lineage(MODEL, v["bad"]).events]
    assert events[-2:] == ["shadow_started", "rolled_back"]
    promoted = [e["kind"] for e in registry.lineage(MODEL, v["good"]).events]
    assert "promoted" in promoted


def test_cluster_objects_for_the_same_decisions_pass_the_kserve_types() -> None:
    from mlops.kserve_types import validate_inference_service

    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "flight-delay", "namespace": "flight-delay"},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "tensorflow"},
                                         "storageUri": "gs://b/registry/flight-delay/versions/1/model"}}},
    }  # fmt: skip
    validate_inference_service(isvc)
    started = canary_patch(isvc, "gs://b/registry/flight-delay/versions/2/model", 10)
    stepped = canary_patch(started, None, next_traffic_percent(10, "promote"))
    promoted = canary_patch(stepped, None, next_traffic_percent(50, "promote"))
    rolled_back = canary_patch(started, None, next_traffic_percent(10, "rollback"))
    for obj in (started, stepped, promoted, rolled_back):
        validate_inference_service(obj)
    assert stepped["spec"]["predictor"]["canaryTrafficPercent"] == 50
    assert "canaryTrafficPercent" not in promoted["spec"]["predictor"]
    assert rolled_back["spec"]["predictor"]["canaryTrafficPercent"] == 0
    broken = canary_patch(isvc, None, 10)
    broken["spec"]["predictor"]["canaryTraficPercent"] = broken["spec"]["predictor"].pop(
        "canaryTrafficPercent"
    )
    with pytest.raises(ValueError, match="canaryTraficPercent"):
        validate_inference_service(broken)
