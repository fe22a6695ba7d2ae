"""Outbound calls against real HTTP servers that hang or fail: bounded time, bounded retries.

The Pushgateway push (``components.monitor.core.push_metrics``) and the KFP API calls of
``mlops submit`` (``mlops.submit``) are sent to a real ``http.server`` on loopback that hangs,
answers 500 or answers like the KFP API; the tests count what reached the server.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from components.monitor.core import MonitorResult, push_metrics
from mlops.retrying import RetryError
from mlops.submit import SubmitError, SubmitPlan, make_client, submit

pytestmark = [
    pytest.mark.unit,
    # kfp.Client warns on every construction that it needs a v2 backend; the fake API is one.
    pytest.mark.filterwarnings("ignore:This client only works with Kubeflow Pipeline"),
]

# What a test server does with one request: (method, path, attempt number) -> (status, body),
# or None to hang until the client gives up.
Behaviour = Callable[[str, str, int], tuple[int, dict] | None]


class Server:
    """A real HTTP server on a free loopback port that records every request it receives."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.hits: list[tuple[str, str]] = []
        self.stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                path = self.path.split("?")[0]
                outer.hits.append((self.command, path))
                count = outer.hits.count((self.command, path))
                answer = behaviour(self.command, path, count)
                if answer is None:
                    outer.stop.wait(60)  # hangs; the client must time out first
                    return
                status, body = answer
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = _handle

            def log_message(self, format: str, *args: object) -> None:
                return

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.http.server_address[1]}"

    def close(self) -> None:
        self.stop.set()
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Behaviour], Server]]:
    servers: list[Server] = []

    def start(behaviour: Behaviour) -> Server:
        servers.append(Server(behaviour))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


RESULT = MonitorResult(requests=10, model_versions=["v1"], drift={"temp": 0.3},
                       drift_thresholds={"temp": 0.1})  # fmt: skip


def test_push_to_a_hanging_gateway_fails_in_bounded_time(serve: Callable[..., Server]) -> None:
    gateway = serve(lambda method, path, n: None)
    t0 = time.monotonic()
    with pytest.raises(RetryError, match=f"push to pushgateway {gateway.address} failed after 3"):
        push_metrics(RESULT, "flight-delay", gateway.address, timeout_s=0.3, backoff_s=0.05)
    # Three attempts of 0.3 s and two short sleeps, not the library's default 30 s each.
    assert time.monotonic() - t0 < 3.0
    assert [m for m, _ in gateway.hits] == ["PUT"] * 3


def test_push_is_retried_through_5xx_and_not_on_4xx(serve: Callable[..., Server]) -> None:
    flaky = serve(lambda method, path, n: (500, {}) if n < 3 else (200, {}))
    push_metrics(RESULT, "flight-delay", flaky.address, timeout_s=2, backoff_s=0.05)
    assert len(flaky.hits) == 3 and flaky.hits[0][1] == "/metrics/job/flight-delay-monitor"

    down = serve(lambda method, path, n: (503, {}))
    with pytest.raises(RetryError, match="503"):
        push_metrics(RESULT, "flight-delay", down.address, timeout_s=2, backoff_s=0.05)
    assert len(down.hits) == 3

    refused = serve(lambda method, path, n: (400, {}))
    with pytest.raises(urllib.error.HTTPError):
        push_metrics(RESULT, "flight-delay", refused.address, timeout_s=2, backoff_s=0.05)
    assert len(refused.hits) == 1  # a bad push stays bad: no retry


API = "/apis/v2beta1"


def kfp_api(run_answer: Callable[[int], tuple[int, dict] | None], flaky_list: int = 0) -> Behaviour:
    """Answers like the KFP v2beta1 API for one existing pipeline, version and experiment."""

    def behaviour(method: str, path: str, n: int) -> tuple[int, dict] | None:
        if path == f"{API}/healthz":
            return 200, {"multi_user": False}
        if path == f"{API}/pipelines":
            if n <= flaky_list:
                return 500, {"error": "backend restarting"}
            return 200, {"pipelines": [{"pipeline_id": "p-1", "display_name": "fd"}],
                         "total_size": 1}  # fmt: skip
        if path == f"{API}/pipelines/p-1/versions":
            return 200, {"pipeline_versions": [{"pipeline_version_id": "v-1",
                                                "display_name": "v-abc"}]}  # fmt: skip
        if path == f"{API}/experiments":
            return 200, {"experiments": [{"experiment_id": "e-1", "display_name": "exp"}],
                         "total_size": 1}  # fmt: skip
        if method == "POST" and path == f"{API}/runs":
            return run_answer(n)
        return 404, {"error": f"no route {path}"}

    return behaviour


def plan(tmp_path: Path) -> SubmitPlan:
    return SubmitPlan("fd", "v-abc", "exp", "run", tmp_path / "p.yaml", {"first_span": "2013-01"})


@pytest.fixture(autouse=True)
def no_kfp_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # kfp.Client reads ~/.config/kfp/context.json: keep the user's own out of the tests.
    monkeypatch.setenv("HOME", str(tmp_path))


def test_kfp_client_against_a_hanging_api_fails_in_bounded_time(
    serve: Callable[..., Server],
) -> None:
    import kfp  # noqa: F401  (imported before the clock starts: the import is slow)

    api = serve(lambda method, path, n: None)
    t0 = time.monotonic()
    with pytest.raises(SubmitError, match=r"GET healthz .* failed after 2 attempts"):
        make_client(f"http://{api.address}", None, None, timeout_s=0.3, attempts=2)
    assert time.monotonic() - t0 < 5.0
    assert api.hits == [("GET", f"{API}/healthz")] * 2


def test_kfp_reads_are_retried_through_5xx_and_the_run_is_started_once(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    api = serve(kfp_api(lambda n: (200, {"run_id": "r-1"}), flaky_list=2))
    client = make_client(f"http://{api.address}", None, None, timeout_s=2, attempts=3)
    ids = submit(client, plan(tmp_path), api.address, attempts=3)
    assert ids == {"pipeline_id": "p-1", "version_id": "v-1", "experiment_id": "e-1",
                   "run_id": "r-1"}  # fmt: skip
    assert api.hits.count(("GET", f"{API}/pipelines")) == 3
    assert api.hits.count(("POST", f"{API}/runs")) == 1


@pytest.mark.parametrize("answer", [None, (500, {"error": "internal"})], ids=["hang", "500"])
def test_starting_a_run_is_never_repeated_after_the_request_was_sent(
    serve: Callable[..., Server], tmp_path: Path, answer: tuple[int, dict] | None
) -> None:
    api = serve(kfp_api(lambda n: answer))
    client = make_client(f"http://{api.address}", None, None, timeout_s=0.5, attempts=3)
    t0 = time.monotonic()
    with pytest.raises(SubmitError, match=r"start run .* may have taken effect") as err:
        submit(client, plan(tmp_path), api.address, attempts=3)
    assert time.monotonic() - t0 < 5.0
    # A second POST could start a second training run: the call is made once.
    assert api.hits.count(("POST", f"{API}/runs")) == 1
    # One line naming the failure, not the response's headers and body.
    assert "HTTPHeaderDict" not in str(err.value) and "\n" not in str(err.value)


def test_submit_retries_end_with_a_clear_error(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    api = serve(kfp_api(lambda n: (200, {"run_id": "r-1"}), flaky_list=99))
    client = make_client(f"http://{api.address}", None, None, timeout_s=2, attempts=2)
    with pytest.raises(
        SubmitError, match=r"find or upload pipeline on .* failed after 2 attempts"
    ) as err:
        submit(client, plan(tmp_path), api.address, attempts=2)
    assert str(err.value).endswith("HTTP 500 Internal Server Error")
    assert api.hits.count(("GET", f"{API}/pipelines")) == 2


def test_cli_retrain_marks_a_submitted_cause_handled_only_when_its_run_succeeded(
    serve: Callable[..., Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mlops retrain-if-needed --submit`` waits for the KFP run and records its outcome."""
    from mlops.cli import main
    from mlops.retrain import Ledger

    states = iter(["FAILED", "SUCCEEDED"])
    final: dict[str, str] = {}

    def behaviour(method: str, path: str, n: int) -> tuple[int, dict] | None:
        if method == "POST" and path == f"{API}/pipelines/upload_version":
            return 200, {"pipeline_id": "p-1", "pipeline_version_id": f"v-{n + 1}"}
        if method == "POST" and path == f"{API}/runs":
            final["state"] = next(states)
            return 200, {"run_id": f"r-{n}", "state": "PENDING"}
        if method == "GET" and path.startswith(f"{API}/runs/"):
            return 200, {"run_id": path.rsplit("/", 1)[1], "state": final["state"]}
        return kfp_api(lambda n: None)(method, path, n)

    api = serve(behaviour)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KFP_HOST", f"http://{api.address}")
    alerts = tmp_path / "alerts.json"
    labels = {"alertname": "FlightDelayFeatureDrift", "feature": "temp", "comparison": "drift"}
    alerts.write_text(json.dumps({"alerts": [{"status": "firing", "labels": labels}]}))
    argv = ["retrain-if-needed", "--submit", "--alerts-file", str(alerts), "--ledger", "l.json"]
    assert main(argv) == 1  # the run failed: the cause stays eligible
    (entry,) = Ledger(tmp_path / "l.json").load().values()
    assert entry["state"] == "failed"
    assert main(argv) == 0  # the alert still fires; this run succeeds
    (entry,) = Ledger(tmp_path / "l.json").load().values()
    assert entry["state"] == "succeeded"
    assert main(argv) == 0 and api.hits.count(("POST", f"{API}/runs")) == 2  # handled: no 3rd
