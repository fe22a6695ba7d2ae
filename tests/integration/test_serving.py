"""The real KServe model server on 127.0.0.1: V1 and V2, bad input, Prometheus, consistency.

One server (transformer + predictor in one process, Feast SDK online reads) serves a real
SavedModel with the serving signature; a real Prometheus scrapes it. The online store is
materialized up to one departure minute, so the features served for that minute's flights are
exactly the offline point-in-time join's, and the served scores must equal the offline scores.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops import features as F
from mlops.feast_ops import materialize
from mlops.shadow import free_port, prometheus, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
MODEL = "flight-delay"
AT = pd.Timestamp("2013-06-14T16:00:00Z")  # a busy departure minute
TrainingSet = Callable[[str, str], tuple[pd.DataFrame, pd.DataFrame]]


def call(url: str, body: bytes | None = None, request_id: str = "") -> tuple[int, dict]:
    headers = {"content-type": "application/json"}
    if request_id:
        headers["x-request-id"] = request_id
    req = urllib.request.Request(url, body, headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def post(url: str, payload: object, request_id: str = "") -> tuple[int, dict]:
    return call(url, json.dumps(payload).encode(), request_id)


@pytest.fixture(scope="module")
def flights(prepared_repo: Path) -> pd.DataFrame:
    """One departure minute's flights, with the offline point-in-time join of their features."""
    from feast import FeatureStore

    table = pd.read_parquet(prepared_repo / "data" / "flights.parquet")
    rows = table[table[F.EVENT_TIMESTAMP] == AT].reset_index(drop=True)
    store = FeatureStore(repo_path=str(prepared_repo))
    joined = store.get_historical_features(
        entity_df=rows, features=store.get_feature_service(F.FEATURE_SERVICE)
    ).to_df()
    return joined.sort_values(F.FLIGHT_ID).reset_index(drop=True)


@pytest.fixture(scope="module")
def server(prepared_repo: Path, flights: pd.DataFrame,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:  # fmt: skip
    from model_fixtures import export_logistic_model

    materialize(prepared_repo, datetime(2012, 12, 1, tzinfo=UTC), AT.to_pydatetime())
    work = tmp_path_factory.mktemp("serving")
    model_dir = export_logistic_model(work / "registry" / "versions" / "7" / "model",
                                      carrier_bonus={"UA": 0.4, "B6": -0.3})  # fmt: skip
    port = free_port()
    log = (work / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving.transformer", f"--model_name={MODEL}",
         f"--model_dir={model_dir}", f"--feast_repo={prepared_repo}", f"--http_port={port}",
         f"--request_log={work / 'requests.jsonl'}", "--max_batch_size=64"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/v2/models/{MODEL}/ready", proc)
        yield {"base": base, "model_dir": model_dir, "work": work, "proc": proc}
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def instances(df: pd.DataFrame) -> list[dict]:
    out = []
    for rec in df.to_dict(orient="records"):
        inst = {n: rec[n] for n in F.REQUEST_FEATURE_NAMES}
        inst[F.TAILNUM] = rec[F.TAILNUM]
        out.append({k: (float(v) if k in F.NUMERIC_FEATURES else str(v)) for k, v in inst.items()})
    return out


def test_v1_and_v2_predict_single_and_batched(server: dict, flights: pd.DataFrame) -> None:
    base, insts = server["base"], instances(flights)
    status, body = post(f"{base}/v1/models/{MODEL}:predict", {"instances": insts[:1]})
    assert status == 200 and len(body["predictions"]) == 1
    status, body = post(f"{base}/v1/models/{MODEL}:predict", {"instances": insts})
    assert status == 200 and len(body["predictions"]) == len(insts)
    assert all(0.0 < p < 1.0 for p in body["predictions"])

    cols = {k: [i[k] for i in insts] for k in insts[0]}
    v2 = {"id": "req-1", "inputs": [
        {"name": k, "shape": [len(v)], "datatype": "FP32" if k in F.NUMERIC_FEATURES else "BYTES",
         "data": v} for k, v in cols.items()]}  # fmt: skip
    status, body = post(f"{base}/v2/models/{MODEL}/infer", v2)
    assert status == 200, body
    assert body["outputs"][0]["name"] == "score" and body["outputs"][0]["shape"] == [len(insts)]
    assert call(f"{base}/v2/health/ready")[0] == 200
    status, meta = call(f"{base}/v2/models/{MODEL}")
    assert status == 200 and meta["name"] == MODEL


def test_training_serving_consistency(server: dict, flights: pd.DataFrame) -> None:
    """Served scores equal the same model's offline scores on the point-in-time features."""
    from components.evaluate.core import score

    url = f"{server['base']}/v1/models/{MODEL}:predict"
    status, body = post(url, {"instances": instances(flights)}, request_id="consistency")
    assert status == 200
    offline = score(server["model_dir"], flights)
    np.testing.assert_allclose(np.array(body["predictions"]), offline, rtol=1e-6, atol=1e-7)
    # The request log holds what was served, with the features looked up. It is flushed at most
    # once a second, on a write: one more request after a second makes it flush.
    time.sleep(1.1)
    post(url, {"instances": instances(flights.head(1))})
    logged = [json.loads(line) for line in (server["work"] / "requests.jsonl").read_text()
              .splitlines()]  # fmt: skip
    last = sorted((r for r in logged if r["request_id"] == "consistency"), key=lambda r: r["row"])
    assert [r["score"] for r in last] == pytest.approx(body["predictions"])
    temps = [r["features"]["temp"] for r in last]
    assert temps == pytest.approx(flights["temp"].tolist())


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        (json.dumps({"instances": [{"carrier": "UA"}]}).encode(), "origin"),
        (json.dumps({"instances": [{"carrier": "UA", "origin": "JFK", "dest": "LAX",
                                    "distance": "far", "sched_dep_hour": 9, "day_of_week": 1,
                                    "month": 6, "tailnum": "N1"}]}).encode(), "distance"),
        (json.dumps({"instances": [{"carrier": "ZZ", "origin": "JFK", "dest": "LAX",
                                    "distance": 2475, "sched_dep_hour": 9, "day_of_week": 1,
                                    "month": 6, "tailnum": "N1"}]}).encode(), "carrier"),
        # NaN is not JSON: the parser refuses it with its position (the validator's own NaN
        # check, for NaN that arrives decoded, is unit-tested in test_serving_validation.py).
        (b'{"instances": [{"carrier": "UA", "origin": "JFK", "dest": "LAX", "distance": NaN, '
         b'"sched_dep_hour": 9, "day_of_week": 1, "month": 6, "tailnum": "N1"}]}', "char 77"),
    ],
)  # fmt: skip
def test_bad_requests_get_a_4xx_naming_the_field(server: dict, flights: pd.DataFrame,
                                                 body: bytes, field: str) -> None:  # fmt: skip
    status, reply = call(f"{server['base']}/v1/models/{MODEL}:predict", body)
    assert 400 <= status < 500, reply
    assert field in reply["error"], reply
    # ...and the server keeps serving.
    ok, good = post(f"{server['base']}/v1/models/{MODEL}:predict",
                    {"instances": instances(flights.head(1))})  # fmt: skip
    assert ok == 200 and len(good["predictions"]) == 1
    assert server["proc"].poll() is None


def test_oversized_batch_is_refused(server: dict, flights: pd.DataFrame) -> None:
    insts = instances(flights.head(1)) * 65
    status, reply = post(f"{server['base']}/v1/models/{MODEL}:predict", {"instances": insts})
    assert status == 400 and "64" in reply["error"]


def test_prometheus_scrapes_per_slice_series(server: dict, flights: pd.DataFrame) -> None:
    base = server["base"]
    with prometheus(base.removeprefix("http://"), server["work"]) as prom:
        for _ in range(3):
            post(f"{base}/v1/models/{MODEL}:predict", {"instances": instances(flights)})
            time.sleep(1.0)
        deadline = time.monotonic() + 20
        query = (f'sum by (slice_value) ({"flight_delay_predictions_total"}'
                 f'{{model="{MODEL}",version="7",slice_key="origin"}})')  # fmt: skip
        by_origin: dict[str, float] = {}
        while time.monotonic() < deadline and sum(by_origin.values()) < len(flights):
            # Every allow-listed slice series exists from the start (at 0): keep served ones.
            by_origin = {r["metric"]["slice_value"]: float(r["value"][1])
                         for r in prom.query(query) if float(r["value"][1]) > 0}  # fmt: skip
            time.sleep(0.5)
        assert set(by_origin) <= {"EWR", "JFK", "LGA"} and by_origin
        assert sum(by_origin.values()) >= len(flights)
        # The bad requests of the tests above (pytest runs a module's tests in order).
        errors = prom.scalar(f'sum(flight_delay_request_errors_total{{model="{MODEL}"}})')
        assert errors >= 6


def test_two_process_topology_scores_like_the_embedded_server(
    server: dict, flights: pd.DataFrame, prepared_repo: Path
) -> None:
    """The cluster topology: transformer -> predictor over HTTP (V1 and V2), same scores."""
    insts = instances(flights)
    status, embedded = post(f"{server['base']}/v1/models/{MODEL}:predict", {"instances": insts})
    assert status == 200
    work, procs = server["work"], []
    try:
        pport = free_port()
        with (work / "predictor.log").open("wb") as plog:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "serving.predictor", f"--model_name={MODEL}",
                 f"--model_dir={server['model_dir']}", f"--http_port={pport}"],
                stdout=plog, stderr=subprocess.STDOUT))  # fmt: skip
        wait_ready(f"http://127.0.0.1:{pport}/v2/models/{MODEL}/ready", procs[0])
        for protocol in ("v1", "v2"):
            port = free_port()
            with (work / f"transformer-{protocol}.log").open("wb") as tlog:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "serving.transformer", f"--model_name={MODEL}",
                     f"--predictor_host=127.0.0.1:{pport}", f"--predictor_protocol={protocol}",
                     f"--feast_repo={prepared_repo}", f"--http_port={port}",
                     f"--request_log={work / f'requests-{protocol}.jsonl'}"],
                    stdout=tlog, stderr=subprocess.STDOUT))  # fmt: skip
            base = f"http://127.0.0.1:{port}"
            wait_ready(f"{base}/v2/models/{MODEL}/ready", procs[-1])
            status, remote = post(f"{base}/v1/models/{MODEL}:predict", {"instances": insts})
            assert status == 200, remote
            np.testing.assert_allclose(remote["predictions"], embedded["predictions"], rtol=1e-6)
            # One transformer fronts every predictor revision of a canary: answers and
            # per-slice series carry the version the predictor reported, not "remote".
            assert remote["model_version"] == "7"
            with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
                scraped = r.read().decode()
            assert any(line.startswith("flight_delay_predictions_total{")
                       and 'version="7"' in line for line in scraped.splitlines())  # fmt: skip
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=20)
