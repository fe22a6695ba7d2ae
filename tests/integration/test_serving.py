"""The real KServe model server on 127.0.0.1: V1 and V2, bad input, Prometheus, consistency.

One server (transformer + predictor in one process, Feast SDK online reads) serves a real
SavedModel with the serving signature; a real Prometheus scrapes it. The online store is
materialized up to one departure minute, so the features served for that minute's flights are
exactly the offline point-in-time join's, and the served scores must equal the offline scores.
"""

from __future__ import annotations

import json
import re
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
MAX_BODY = 64 * 1024  # the servers' --max_request_bytes here: 64 instances are ~15 KiB


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
    port, grpc_port = free_port(), free_port()
    log = (work / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving.transformer", f"--model_name={MODEL}",
         f"--model_dir={model_dir}", f"--feast_repo={prepared_repo}", f"--http_port={port}",
         f"--request_log={work / 'requests.jsonl'}", "--max_batch_size=64",
         f"--grpc_port={grpc_port}", f"--max_request_bytes={MAX_BODY}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/v2/models/{MODEL}/ready", proc)
        yield {"base": base, "model_dir": model_dir, "work": work, "proc": proc,
               "grpc": f"127.0.0.1:{grpc_port}"}  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def instances(df: pd.DataFrame) -> list[dict]:
    """Request instances of the flights, their prediction moment (T, the departure minute) set.

    The real-time rows the online store holds were stamped T; without the moment the server's
    clock would find them years old and serve them as missing (the staleness policy).
    """
    out = []
    for rec in df.to_dict(orient="records"):
        inst = {n: rec[n] for n in F.REQUEST_FEATURE_NAMES}
        inst[F.TAILNUM] = rec[F.TAILNUM]
        out.append({k: (float(v) if k in F.NUMERIC_FEATURES else str(v)) for k, v in inst.items()})
        out[-1][F.EVENT_TIMESTAMP] = pd.Timestamp(rec[F.EVENT_TIMESTAMP]).isoformat()
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
    # The real-time features served at T are the offline point-in-time join's, value for value.
    for f in F.REALTIME_FEATURES:
        served = [np.nan if r["features"][f.name] is None else r["features"][f.name] for r in last]
        np.testing.assert_allclose(served, flights[f.name].to_numpy(float), err_msg=f.name)
    assert flights["origin_deps_60m"].notna().all()  # the rows were there to be served


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
        # The predictor alone validates its V2 inputs as the transformer does.
        rows = feature_rows(flights)
        status, reply = post(f"http://127.0.0.1:{pport}/v2/models/{MODEL}/infer",
                             v2_payload(rows, distance={"shape": [len(rows) + 1]}))  # fmt: skip
        assert status == 400 and reply["error"].startswith("distance:"), reply
        # The predictor gone: a 5xx naming the kind of failure, no repr() of the client's error.
        procs[0].terminate()
        procs[0].wait(timeout=20)
        status, reply = post(f"{base}/v1/models/{MODEL}:predict", {"instances": insts})
        assert status == 502 and reply["kind"] == "predict", reply
        assert reply["error"].startswith("predictor failed: ") and "(" not in reply["error"]
        assert "'" not in reply["error"] and "object at 0x" not in reply["error"]
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=20)


def v2_payload(insts: list[dict], **over: dict) -> dict:
    """A V2 request of ``insts`` (one input per field); ``over`` patches an input's fields."""
    inputs = []
    for k in insts[0]:
        tensor = {"name": k, "shape": [len(insts)], "data": [i[k] for i in insts],
                  "datatype": "FP32" if k in F.NUMERIC_FEATURES else "BYTES"}  # fmt: skip
        tensor.update(over.get(k, {}))
        inputs.append(tensor)
    return {"inputs": inputs}


def feature_rows(df: pd.DataFrame) -> list[dict]:
    """The predictor's inputs: every model feature, as the transformer sends them."""
    rows = df[list(F.FEATURE_NAMES)].astype(object)
    return [
        {k: (None if pd.isna(v) else float(v)) if k in F.NUMERIC_FEATURES
         else ("" if pd.isna(v) else str(v)) for k, v in r.items()}
        for r in rows.to_dict(orient="records")
    ]  # fmt: skip


def raw_exchange(base: str, head: bytes, body_parts: list[bytes]) -> tuple[int, dict]:
    """Send a request's head and some body parts, never finishing the body; read the answer."""
    import socket

    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        for part in body_parts:
            sock.sendall(part)
        reply = b""
        while True:  # a server waiting for the rest of the body times this out
            head_end = reply.find(b"\r\n\r\n")
            if head_end >= 0:
                m = re.search(rb"(?i)content-length: *(\d+)", reply[:head_end])
                if m and len(reply) >= head_end + 4 + int(m.group(1)):
                    break
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    status, body = int(reply.split(b" ", 2)[1]), reply.split(b"\r\n\r\n", 1)[1]
    return status, json.loads(body) if body.startswith(b"{") else {"text": body.decode()}


def test_a_body_past_the_cap_is_refused_before_it_is_read(server: dict) -> None:
    base, path = server["base"], f"/v1/models/{MODEL}:predict"
    # Declared too large: answered 413 with none of the body sent.
    head = (f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {10 * MAX_BODY}\r\n\r\n").encode()  # fmt: skip
    status, reply = raw_exchange(base, head, [])
    assert status == 413 and "body" in reply["error"] and reply["kind"] == "bad_request", reply
    # Chunked, no Content-Length: cut off once past the cap, the rest never sent.
    head = (f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            "transfer-encoding: chunked\r\n\r\n").encode()  # fmt: skip
    chunk = b"x" * 8192
    parts = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (MAX_BODY // len(chunk) + 1)
    status, reply = raw_exchange(base, head, parts)
    assert status == 413 and str(MAX_BODY) in reply["error"], reply
    # A malformed Content-Length is a 400 (uvicorn's parser answers it), and the server keeps
    # serving.
    head = (f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: -5\r\n\r\n").encode()
    assert raw_exchange(base, head, [])[0] == 400
    assert post(f"{base}{path}", {"instances": [{"carrier": "UA"}]})[0] == 400
    assert server["proc"].poll() is None


@pytest.mark.parametrize("model", [MODEL, f"{MODEL}-predictor"])
@pytest.mark.parametrize(
    ("patch", "field", "words"),
    [
        # The declared shape is what the array would be built to: before the fix a 500.
        ({"shape": [10_000_000]}, "sched_dep_hour", "exceeds the limit"),
        ({"shape": [3]}, "sched_dep_hour", "rows"),
        ({"datatype": "INT64"}, "sched_dep_hour", "datatype 'INT64'"),
        ({"data": ["nine", "ten"]}, "sched_dep_hour", "is not a FP32 value"),
        ({"name": "sched_dep_hour_typo"}, "sched_dep_hour_typo", "unknown input"),
    ],
)  # fmt: skip
def test_a_malformed_v2_tensor_is_a_4xx_naming_the_input(
    server: dict, flights: pd.DataFrame, model: str, patch: dict, field: str, words: str
) -> None:
    """The transformer and the predictor (on its own endpoint, with its own inputs) alike."""
    if model == MODEL:
        payload = v2_payload(instances(flights.head(2)), sched_dep_hour=patch)
    else:
        payload = v2_payload(feature_rows(flights.head(2)), sched_dep_hour=patch)
    if model != MODEL and "exceeds" in words:
        words = "rows"  # the predictor has no batch bound of its own, only the body cap
    status, reply = post(f"{server['base']}/v2/models/{model}/infer", payload)
    assert 400 <= status < 500, reply
    assert reply["error"].startswith(f"{field}:") and words in reply["error"], reply
    payload = v2_payload(instances(flights.head(2))) if model == MODEL else None
    if payload is not None:
        assert post(f"{server['base']}/v2/models/{model}/infer", payload)[0] == 200


def grpc_request(insts: list[dict], **over: dict) -> object:
    """A V2 ``ModelInferRequest`` of ``insts`` for the transformer."""
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    req = pb.ModelInferRequest(model_name=MODEL, id="grpc-1")
    for k in insts[0]:
        numeric = k in F.NUMERIC_FEATURES
        t = req.inputs.add(name=k, datatype="FP32" if numeric else "BYTES", shape=[len(insts)])
        if numeric:
            t.contents.fp32_contents.extend(float(i[k]) for i in insts)
        else:
            t.contents.bytes_contents.extend(str(i[k]).encode() for i in insts)
        for field, value in over.get(k, {}).items():
            if field == "shape":
                del t.shape[:]
                t.shape.extend(value)
            else:
                setattr(t, field, value)
    return req


def metric_total(base: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        text = r.read().decode()
    samples = [s for fam in text_string_to_metric_families(text) for s in fam.samples]
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_grpc_v2_is_served_validated_and_counted(server: dict, flights: pd.DataFrame) -> None:
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    base, insts = server["base"], instances(flights)
    requests_before = metric_total(base, "flight_delay_requests_total", protocol="grpc")
    errors_before = metric_total(base, "flight_delay_request_errors_total", kind="bad_request")
    with grpc.insecure_channel(server["grpc"]) as channel:
        stub = GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
        reply = stub.ModelInfer(grpc_request(insts), timeout=30)
        scores = list(reply.outputs[0].contents.fp32_contents)
        assert reply.outputs[0].name == "score" and len(scores) == len(insts)
        # The same scores as REST's V2 answer.
        status, rest = post(f"{base}/v2/models/{MODEL}/infer", v2_payload(insts))
        assert status == 200
        np.testing.assert_allclose(scores, rest["outputs"][0]["data"], rtol=1e-6)
        # The same validation: a malformed tensor is INVALID_ARGUMENT naming the input.
        for over, words in (({"shape": [len(insts) + 1]}, "rows"),
                            ({"datatype": "FP64"}, "datatype 'FP64'")):  # fmt: skip
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(grpc_request(insts, distance=over), timeout=30)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details().startswith("distance:") and words in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(grpc_request(insts, carrier={"name": "airline"}), timeout=30)
        assert err.value.details() == "airline: unknown input"
        # The same size cap: a message past --max_request_bytes is refused.
        big = grpc_request(insts * 200)
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(big, timeout=30)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The same metrics: requests by protocol, failures by kind.
    assert metric_total(base, "flight_delay_requests_total", protocol="grpc") == requests_before + 4
    errors = metric_total(base, "flight_delay_request_errors_total", kind="bad_request")
    assert errors == errors_before + 3
    assert server["proc"].poll() is None


def test_sigterm_loses_no_logged_request(prepared_repo: Path, server: dict,
                                          flights: pd.DataFrame) -> None:  # fmt: skip
    """A real server, SIGTERM after the last answer: every answered request is in the log.

    The flush interval is an hour, so only the shutdown's flush can have written the rows.
    """
    import signal

    work, port = server["work"], free_port()
    log_path = work / "sigterm-requests.jsonl"
    with (work / "sigterm.log").open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "serving.transformer", f"--model_name={MODEL}",
             f"--model_dir={server['model_dir']}", f"--feast_repo={prepared_repo}",
             f"--http_port={port}", f"--request_log={log_path}", "--request_log_flush_s=3600",
             "--no_feature_warmup"],
            stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/v2/models/{MODEL}/ready", proc)
        sent = [f"term-{i}" for i in range(20)]
        for rid in sent:
            status, _ = post(f"{base}/v1/models/{MODEL}:predict",
                             {"instances": instances(flights.head(2))}, request_id=rid)  # fmt: skip
            assert status == 200
        assert not log_path.exists() or log_path.read_bytes() == b""  # still buffered
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0  # a graceful stop, not the signal's default death
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    logged = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert sorted({r["request_id"] for r in logged}) == sorted(sent)
    assert len(logged) == 2 * len(sent)
