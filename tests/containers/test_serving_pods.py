"""The chart's rendered serving pods and feature server as containers, serving the pushed model.

The InferenceService (transformer -> predictor) and the Feast feature server Deployment come from
``helm template`` of the real chart; ``serving_pods`` turns them into pods as KServe would and
``podman kube play`` starts them under the chart's security context (non-root, read-only root
filesystem, no capabilities). The predictor serves the version the containerized push step
registered (``container_run``); the transformer reads features from the feature server over
HTTP, the cluster topology (fixture ``pods`` in conftest.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from kfp_podman import MODEL, ContainerRun
from serving_pods import SERVE_AT, logs

from mlops import features as F
from mlops.shadow import free_port, prometheus, wait_ready

pytestmark = [pytest.mark.containers, pytest.mark.timeout(1800)]


def call(url: str, body: bytes | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, body, {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw.startswith(b"{") else raw.decode())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def post(url: str, payload: object) -> tuple[int, Any]:
    return call(url, json.dumps(payload).encode())


def instances(df: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for rec in df.to_dict(orient="records"):
        inst = {n: rec[n] for n in F.REQUEST_FIELDS}
        out.append({k: (float(v) if k in F.NUMERIC_FEATURES else str(v)) for k, v in inst.items()})
    return out


@pytest.fixture(scope="module")
def flights(container_run: ContainerRun) -> pd.DataFrame:
    table = pd.read_parquet(container_run.repo / "data" / "flights.parquet")
    return table[table[F.EVENT_TIMESTAMP] == pd.Timestamp(SERVE_AT)].reset_index(drop=True)


@pytest.fixture(scope="module")
def embedded(pods: Any, container_run: ContainerRun) -> Iterator[str]:
    """The embedded (one-process, Feast SDK) server on the same registry version."""
    port = free_port()
    model_dir = container_run.registry / MODEL / "versions" / pods.version / "model"
    log = (pods.work / "embedded.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serving.transformer",
            f"--model_name={MODEL}",
            f"--model_dir={model_dir}",
            f"--feast_repo={pods.repo}",
            f"--http_port={port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}/v2/models/{MODEL}/ready", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def test_v1_and_v2_score_like_the_embedded_server(
    pods: Any, embedded: str, flights: pd.DataFrame
) -> None:
    insts = instances(flights)
    status, ours = post(f"{pods.base}/v1/models/{MODEL}:predict", {"instances": insts})
    assert status == 200, f"{ours}\n{logs(pods.podset)}"
    status, theirs = post(f"{embedded}/v1/models/{MODEL}:predict", {"instances": insts})
    assert status == 200, theirs
    np.testing.assert_allclose(ours["predictions"], theirs["predictions"], rtol=1e-5)
    # The answer names the registry version the predictor pod serves.
    assert ours["model_version"] == pods.version

    cols = {k: [i[k] for i in insts] for k in insts[0]}
    v2 = {
        "id": "v2",
        "inputs": [
            {
                "name": k,
                "shape": [len(v)],
                "datatype": "FP32" if k in F.NUMERIC_FEATURES else "BYTES",
                "data": v,
            }
            for k, v in cols.items()
        ],
    }
    status, body = post(f"{pods.base}/v2/models/{MODEL}/infer", v2)
    assert status == 200, body
    np.testing.assert_allclose(body["outputs"][0]["data"], theirs["predictions"], rtol=1e-5)


@pytest.mark.parametrize(
    ("instance", "field"),
    [
        ({"carrier": "UA"}, "origin"),
        (
            {
                "carrier": "ZZ",
                "origin": "JFK",
                "dest": "LAX",
                "distance": 2475,
                "sched_dep_hour": 9,
                "day_of_week": 1,
                "month": 1,
                "tailnum": "N1",
            },
            "carrier",
        ),
        (
            {
                "carrier": "UA",
                "origin": "JFK",
                "dest": "LAX",
                "distance": "far",
                "sched_dep_hour": 9,
                "day_of_week": 1,
                "month": 1,
                "tailnum": "N1",
            },
            "distance",
        ),
    ],
)
def test_bad_requests_get_a_4xx_and_the_pods_keep_serving(
    pods: Any, flights: pd.DataFrame, instance: dict[str, Any], field: str
) -> None:
    """An unknown carrier is refused: the serving image carries the schema."""
    status, reply = post(f"{pods.base}/v1/models/{MODEL}:predict", {"instances": [instance]})
    assert 400 <= status < 500 and field in reply["error"], reply
    status, good = post(
        f"{pods.base}/v1/models/{MODEL}:predict", {"instances": instances(flights.head(1))}
    )
    assert status == 200 and len(good["predictions"]) == 1


def test_probes_answer(pods: Any) -> None:
    """Every probe of the rendered pods, on the port each server got."""
    checked = 0
    for pod in pods.podset.pods:
        for container in pod["spec"]["containers"]:
            for probe in ("readinessProbe", "livenessProbe"):
                get = container.get(probe, {}).get("httpGet")
                if get is None:
                    continue
                port = get["port"] if isinstance(get["port"], int) else pods.feast_port
                status, _ = call(f"http://127.0.0.1:{port}{get['path']}")
                assert status == 200, (pod["metadata"]["name"], probe, get)
                checked += 1
    assert checked == 6  # predictor, transformer, feature server: readiness and liveness


def test_metrics_carry_the_registry_version_and_prometheus_scrapes_them(
    pods: Any, flights: pd.DataFrame
) -> None:
    for _ in range(3):
        post(f"{pods.base}/v1/models/{MODEL}:predict", {"instances": instances(flights)})
    ports = pods.ports
    targets = [f"127.0.0.1:{ports['transformer']}", f"127.0.0.1:{ports['predictor']}"]
    with prometheus(targets, pods.work) as prom:
        query = (
            f'sum(flight_delay_predictions_total{{model="{MODEL}",'
            f'version="{pods.version}",slice_key="origin"}})'
        )
        served = f'sum(flight_delay_requests_total{{model="{MODEL}",version="{pods.version}"}})'
        deadline = time.monotonic() + 30
        predictions = requests = float("nan")
        while time.monotonic() < deadline:
            predictions, requests = prom.scalar(query), prom.scalar(served)
            if predictions >= 3 * len(flights) and requests >= 3:
                break
            time.sleep(1)
        # Per-slice predictions from the transformer, requests from the predictor pod: both
        # labelled with the registry version, which the rollout analysis selects by.
        assert predictions >= 3 * len(flights), predictions
        assert requests >= 3, requests


def test_the_request_log_lands_on_the_shared_volume(pods: Any) -> None:
    """What the monitoring pipeline reads: the transformer's log on the requests PVC."""
    deadline = time.monotonic() + 15
    files: list[Path] = []
    while time.monotonic() < deadline and not files:
        # The log is flushed on a write at most once a second.
        post(f"{pods.base}/v1/models/{MODEL}:predict", {"instances": []})
        files = sorted(pods.requests.glob("*.jsonl"))
        time.sleep(1.1)
    assert files, sorted(pods.requests.iterdir())
    records = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert records and {r["model_version"] for r in records} == {pods.version}
