"""Faults of the model process behind a real predictor server: hang, kill -9, flood.

One predictor (``python -m serving.predictor``) serves a real SavedModel with a 2 s call deadline
and a queue of 4 rows. The tests stop its model child with SIGSTOP (a real hang) or kill it with
SIGKILL, and check what clients and the readiness endpoints see during the outage and after the
restart. They run in file order on one server: each leaves it serving again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mlops import features as F
from mlops.shadow import free_port, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
MODEL = "flight-delay"
CALL_TIMEOUT_S = 2.0
MAX_QUEUE_ROWS = 4
RESTART_S = 180.0  # importing TensorFlow in a new child, on a loaded 2-core machine


def request(url: str, body: object | None = None) -> tuple[int, dict, dict[str, str]]:
    """Status, JSON body and headers (names lower-cased) of a GET (or a POST of ``body``)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"{}"), lower(r.headers.items())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}"), lower(err.headers.items())


def lower(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers}


def rows(n: int) -> dict:
    row = {n: (0.1 if n in F.NUMERIC_FEATURES else "UA") for n in F.FEATURE_NAMES}
    return {"instances": [row] * n}


def model_children(pid: int) -> list[int]:
    """The server's model processes (multiprocessing spawn children)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:
                out.append(int(child))
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from model_fixtures import export_logistic_model

    work = tmp_path_factory.mktemp("faults")
    model_dir = export_logistic_model(work / "model")
    port = free_port()
    log = (work / "predictor.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving.predictor", f"--model_name={MODEL}",
         f"--model_dir={model_dir}", f"--http_port={port}",
         f"--model_call_timeout_s={CALL_TIMEOUT_S}", f"--max_queue_rows={MAX_QUEUE_ROWS}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{base}/v2/models/{MODEL}/ready", proc, timeout=RESTART_S)
        status, body, _ = request(f"{base}/v1/models/{MODEL}:predict", rows(1))
        assert status == 200, body
        yield {"base": base, "proc": proc, "score": body["predictions"][0], "log": work}
    finally:
        for child in model_children(proc.pid) if proc.poll() is None else []:
            os.kill(child, signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def the_child(server: dict) -> int:
    children = model_children(server["proc"].pid)
    assert len(children) == 1, children
    return children[0]


def ready_status(server: dict) -> int:
    return request(f"{server['base']}/v2/models/{MODEL}/ready")[0]


def wait_recovered(server: dict, old_child: int) -> None:
    """Ready again with a new model child, scoring as before; the old child is reaped."""
    wait_ready(f"{server['base']}/v2/models/{MODEL}/ready", server["proc"], timeout=RESTART_S)
    assert the_child(server) != old_child
    assert not alive(old_child)
    status, body, _ = request(f"{server['base']}/v1/models/{MODEL}:predict", rows(2))
    assert status == 200, body
    assert body["predictions"] == [server["score"]] * 2


def test_a_hung_model_process_fails_the_call_is_restarted_and_reported(server: dict) -> None:
    child = the_child(server)
    os.kill(child, signal.SIGSTOP)  # hung: alive, holding its pipe, answering nothing
    t0 = time.monotonic()
    status, body, _ = request(f"{server['base']}/v1/models/{MODEL}:predict", rows(1))
    elapsed = time.monotonic() - t0
    assert status == 502, body
    assert body["error"] == f"model {MODEL}: model process timed out after {CALL_TIMEOUT_S} s"
    assert body["kind"] == "predict"
    assert CALL_TIMEOUT_S <= elapsed < CALL_TIMEOUT_S + 3
    # While the new child loads, the model is not ready and requests fail at once.
    assert ready_status(server) == 503
    assert request(f"{server['base']}/v1/models/{MODEL}")[0] == 503
    t0 = time.monotonic()
    assert request(f"{server['base']}/v1/models/{MODEL}:predict", rows(1))[0] == 503
    assert time.monotonic() - t0 < 1.0
    # The server itself stays live: the pod is not restarted for it.
    assert request(f"{server['base']}/v2/health/live")[0] == 200
    wait_recovered(server, child)


def test_a_model_process_killed_mid_call_fails_it_fast_and_is_restarted(server: dict) -> None:
    child = the_child(server)
    os.kill(child, signal.SIGSTOP)  # so that the call is surely in flight when it is killed
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(request, f"{server['base']}/v1/models/{MODEL}:predict", rows(1))
        time.sleep(0.3)
        t0 = time.monotonic()
        os.kill(child, signal.SIGKILL)
        status, body, _ = call.result(timeout=30)
        elapsed = time.monotonic() - t0
    assert status == 502, body
    assert body["error"] == f"model {MODEL}: model process died (killed by SIGKILL)"
    assert elapsed < CALL_TIMEOUT_S - 0.5  # the pipe's end, not the deadline
    assert ready_status(server) == 503
    wait_recovered(server, child)


def test_a_model_process_killed_between_calls_is_seen_and_restarted(server: dict) -> None:
    child = the_child(server)
    os.kill(child, signal.SIGKILL)
    deadline = time.monotonic() + 2
    while ready_status(server) != 503:
        assert time.monotonic() < deadline, "readiness still 200 with the model process dead"
        time.sleep(0.05)
    wait_recovered(server, child)


def test_a_flood_past_the_queue_bound_gets_503_with_retry_after(server: dict) -> None:
    child = the_child(server)
    os.kill(child, signal.SIGSTOP)  # the first request holds the model; the rest queue
    url = f"{server['base']}/v1/models/{MODEL}:predict"
    with ThreadPoolExecutor(16) as pool:
        first = pool.submit(request, url, rows(2))
        time.sleep(0.3)
        flood = [pool.submit(request, url, rows(2)) for _ in range(12)]
        time.sleep(0.5)
        # Refused requests do not stop the server from answering others meanwhile.
        assert request(f"{server['base']}/v2/health/live")[0] == 200
        answers = [f.result(timeout=60) for f in flood]
        assert first.result(timeout=60)[0] == 502
    refused = [(b, h) for s, b, h in answers if s == 503 and "queue full" in b.get("error", "")]
    # 4 rows fit in the queue (two requests of 2): of the 12, 10 are refused at once.
    assert len(refused) == 12 - MAX_QUEUE_ROWS // 2, answers
    body, headers = refused[0]
    assert body["error"].startswith(f"model {MODEL}: queue full (4 rows waiting, max_queue_rows 4)")
    assert headers.get("retry-after") == "1"
    # The queued ones were failed fast when their model process was killed, not left to hang.
    others = [s for s, b, _ in answers if not (s == 503 and "queue full" in b.get("error", ""))]
    assert others == [503] * (MAX_QUEUE_ROWS // 2), answers
    wait_recovered(server, child)


def test_an_in_process_model_call_has_a_deadline_too(tmp_path: Path) -> None:
    import asyncio

    import numpy as np
    from model_fixtures import export_logistic_model

    from serving.runtime import CATEGORICAL, NUMERIC, ModelCallTimeout, SavedModelScorer

    scorer = SavedModelScorer(str(export_logistic_model(tmp_path / "model")), call_timeout_s=0.01)

    def inputs(n: int) -> tuple[np.ndarray, np.ndarray]:
        return (np.full((n, len(NUMERIC)), 0.1, np.float32),
                np.full((n, len(CATEGORICAL)), b"UA", object))  # fmt: skip

    async def call(n: int) -> np.ndarray:
        fut: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()

        def done(scores: np.ndarray | None, err: BaseException | None) -> None:
            if err is not None:
                fut.set_exception(err)
            else:
                fut.set_result(scores)

        scorer.start_call(*inputs(n), done)
        return await fut

    try:
        # Half a million rows take far longer than 10 ms: the call fails at its deadline.
        with pytest.raises(ModelCallTimeout, match=r"model call timed out after 0\.01 s"):
            asyncio.run(call(500_000))
        scorer.call_timeout_s = 30.0
        assert asyncio.run(call(2)).shape == (2,)  # the thread is free again afterwards
    finally:
        scorer.close()
