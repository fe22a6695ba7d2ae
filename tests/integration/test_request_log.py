"""Monitoring reads what serving writes: the transformer's RequestLog, as replicas sharing one
volume write it (per-pod files, rotated by size), is what the monitoring component measures with
real TFDV, and object-store URIs (``memory://`` standing in for ``gs://``) are read through
fsspec, never wrapped in ``Path``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kfp.dsl import Artifact

from mlops import features as F
from mlops.registry import PRODUCTION, Lineage, ModelRegistry
from serving import transformer as T
from serving.transformer import RequestLog

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def flights(n: int, seed: int) -> pd.DataFrame:
    """Small seeded rows with every model feature, in the served format."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({name: rng.uniform(0, 100, n) for name in F.NUMERIC_FEATURES})
    df["sched_dep_hour"] = rng.integers(5, 23, n).astype(float)
    df["month"] = 1.0
    df["day_of_week"] = rng.integers(1, 8, n).astype(float)
    for name in F.CATEGORICAL_FEATURES:
        df[name] = rng.choice(["UA", "EWR", "JFK", "B6"], n)
    df["carrier"] = rng.choice(["UA", "B6", "DL"], n)
    df["origin"] = rng.choice(["EWR", "JFK", "LGA"], n)
    return df[list(F.FEATURE_NAMES)]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch
           ) -> tuple[Path, int]:  # fmt: skip
    """Two transformer replicas logging 600 rows into one directory, rotating at 16 KiB."""
    log_dir = tmp_path_factory.mktemp("requests")
    rows = flights(600, seed=1).to_dict(orient="records")
    for pod, part in (("transformer-a", rows[:300]), ("transformer-b", rows[300:])):
        monkeypatch_module.setattr(T.socket, "gethostname", lambda pod=pod: pod)
        log = RequestLog(log_dir, max_mb=16 / 1024, max_files=0)  # keep every rotated file
        for i, row in enumerate(part):
            log.write([{"ts": 0.0, "request_id": f"{pod}-{i}", "row": 0, "model": "flight-delay",
                        "model_version": "1", "features": row, "score": 0.3}])  # fmt: skip
        log.close()
    return log_dir, len(rows)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_replicas_wrote_per_pod_rotated_files(served: tuple[Path, int]) -> None:
    log_dir, _ = served
    names = [p.name for p in log_dir.iterdir()]
    for pod in ("transformer-a", "transformer-b"):
        mine = [n for n in names if n.startswith(f"requests-{pod}-")]
        assert len(mine) > 1, "16 KiB holds about 40 rows: each pod's log must have rotated"


def test_monitor_component_reads_the_directory_and_a_remote_registry(
    served: tuple[Path, int], tmp_path: Path
) -> None:
    """monitor_op as KFP runs its body: the registry on an object store (memory://)."""
    from components.monitor.component import monitor_op
    from components.validate.core import STATS_FILE, stats_from_dataframe

    log_dir, rows = served
    stats = tmp_path / "train-stats"
    stats.mkdir()
    (stats / STATS_FILE).write_bytes(stats_from_dataframe(flights(800, seed=2)).SerializeToString())
    model = tmp_path / "model"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"graph")
    registry_uri = f"memory://registry-{uuid.uuid4().hex}"
    registry = ModelRegistry(registry_uri)
    version = registry.register("flight-delay", model, Lineage(blessed=True), {"blessed": True},
                                statistics_dir=stats)  # fmt: skip
    registry.set_alias("flight-delay", PRODUCTION, version.version)
    assert version.statistics_uri.startswith("memory://")

    out = Artifact(uri=str(tmp_path / "monitor"))
    result = json.loads(monitor_op.python_func(
        request_log=str(log_dir), registry_uri=registry_uri, model_name="flight-delay",
        previous_statistics_uri=version.statistics_uri, feedback_uri="", pushgateway="",
        statistics=out))  # fmt: skip
    assert result["requests"] == rows
    assert result["model_versions"] == ["1"]
    # Both comparisons ran: judged, or (under the monitor's minimum sample) reported as
    # insufficient data per feature.
    assert set(result["skew"]) | set(result["skew_insufficient"])
    assert set(result["drift"]) | set(result["drift_insufficient"])
    assert (tmp_path / "monitor" / STATS_FILE).is_file()
    assert out.metadata["production_version"] == version.version
