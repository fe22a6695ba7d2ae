"""The Alertmanager webhook receiver as a real server: authentication, limits, bad input.

Requests go over real sockets; the ones no HTTP client would send (a negative or missing
Content-Length, a truncated body) are written byte by byte.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops.errors import DataError
from mlops.retrain import (
    WEBHOOK_TOKEN_ENV,
    AlertReceiver,
    Cause,
    Ledger,
    load_webhook_token,
    serve_alert_webhook,
)

pytestmark = pytest.mark.unit

TOKEN = "s3cret-t0ken"
PAYLOAD = {"version": "4", "status": "firing", "receiver": "retrain", "alerts": [
    {"status": "firing", "labels": {"alertname": "FlightDelayFeatureDrift", "feature": "temp",
                                    "comparison": "skew"}, "annotations": {}}]}  # fmt: skip


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[AlertReceiver, list[str]]]:
    runs: list[str] = []

    def start(causes: list[Cause]) -> str:
        runs.append(causes[0].describe())
        return f"run-{len(runs)}"

    server = serve_alert_webhook("127.0.0.1", 0, Ledger(tmp_path / "ledger.json"), start,
                                 token=TOKEN, max_body=4096, read_timeout_s=0.5)  # fmt: skip
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, runs
    server.shutdown()
    server.server_close()


def post(server: AlertReceiver, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    req = urllib.request.Request(url, body, headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def raw(server: AlertReceiver, head: str, body: bytes = b"", shut: bool = True) -> tuple[int, dict]:
    """Send bytes as they are; returns the status and the JSON body of the answer."""
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


JSON_AUTH = {"content-type": "application/json", "authorization": f"Bearer {TOKEN}"}


def head(length: str | None, extra: str = "") -> str:
    lines = ["POST / HTTP/1.1", "Host: x", "Content-Type: application/json",
             f"Authorization: Bearer {TOKEN}"]  # fmt: skip
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return "\n".join(lines) + "\n" + extra


def test_bad_requests_are_refused_with_a_reason_and_the_server_keeps_serving(
    receiver: tuple[AlertReceiver, list[str]],
) -> None:
    server, runs = receiver
    good = json.dumps(PAYLOAD).encode()
    basic_wrong = base64.b64encode(b"alertmanager:guess").decode()
    deep = b"[" * 50 + b"]" * 50
    very_deep = b"[" * 2000 + b"]" * 2000  # past the JSON parser's recursion limit
    labelled = lambda labels: json.dumps({"alerts": [{"labels": labels}]}).encode()  # noqa: E731
    cases: list[tuple[tuple[int, dict], int, str]] = [
        (post(server, good, {"content-type": "application/json"}), 401, "credentials"),
        (post(server, good, {**JSON_AUTH, "authorization": "Bearer nope"}), 401, "credentials"),
        (post(server, good, {**JSON_AUTH, "authorization": f"Basic {basic_wrong}"}), 401, ""),
        (post(server, good, {**JSON_AUTH, "authorization": "Basic !!notbase64"}), 401, ""),
        (post(server, good, {**JSON_AUTH, "content-type": "text/plain"}), 415, "Content-Type"),
        (post(server, b"{not json", JSON_AUTH), 400, "not JSON"),
        (post(server, b"\xff\xfe{}", JSON_AUTH), 400, "UTF-8"),
        (post(server, deep, JSON_AUTH), 400, "nests deeper"),
        (post(server, very_deep, JSON_AUTH), 400, "nests deeper"),
        (post(server, b"[1, 2]", JSON_AUTH), 400, "JSON object"),
        (post(server, b'{"alerts": {"a": 1}}', JSON_AUTH), 400, "'alerts' must be a list"),
        (post(server, b'{"alerts": ["x"]}', JSON_AUTH), 400, "'alerts[0]' must be an object"),
        (
            post(server, b'{"alerts": [{"status": 3, "labels": {}}]}', JSON_AUTH),
            400,
            "'alerts[0].status'",
        ),
        (
            post(server, labelled({"alertname": "A", "feature": 7}), JSON_AUTH),
            400,
            "'alerts[0].labels.feature' must be a string",
        ),
        (post(server, labelled({"feature": "temp"}), JSON_AUTH), 400, "alertname' is missing"),
        (post(server, b'{"alerts": [{}]}', JSON_AUTH), 400, "'alerts[0].labels'"),
        (post(server, b"x" * 5000, JSON_AUTH), 413, "over 4096 bytes"),
        (raw(server, head(None)), 411, "Content-Length is required"),
        (raw(server, head("-1")), 400, "non-negative integer"),
        (raw(server, head("abc")), 400, "non-negative integer"),
        (raw(server, head("10", "Content-Length: 12\n")), 400, "one non-negative integer"),
        (raw(server, head(str(10**30))), 413, "over 4096 bytes"),
        (
            raw(server, head(None, "Transfer-Encoding: chunked\n"), b"5\r\n{}{}{\r\n0\r\n\r\n"),
            411,
            "Transfer-Encoding",
        ),
        (raw(server, head("100"), b'{"alerts": []}'), 400, "shorter than its Content-Length"),
        # Declares 100 bytes, sends 10, then holds the connection open.
        (raw(server, head("100"), b'{"alerts":', shut=False), 408, "not received in time"),
        (raw(server, "GET / HTTP/1.1\nHost: x\n"), 405, "only POST"),
    ]
    for (status, body), expected, reason in cases:
        assert (status, reason in body["error"]) == (expected, True), (body, expected)
    assert runs == [] and not (Path(server.ledger.path)).exists()
    # After all that, a good delivery is handled.
    status, body = post(server, good, JSON_AUTH)
    assert status == 202 and body["claimed"] == [
        "FlightDelayFeatureDrift(comparison=skew, feature=temp)"]  # fmt: skip
    assert server.drain(10) and runs == ["FlightDelayFeatureDrift(comparison=skew, feature=temp)"]
    assert server.outcomes.started[0]["run"] == "run-1"
    # Alertmanager re-sends while the alert fires: the same cause starts nothing more.
    assert post(server, good, JSON_AUTH)[0] == 200 and server.drain(10) and len(runs) == 1


def test_basic_auth_with_the_token_as_password_is_accepted(
    receiver: tuple[AlertReceiver, list[str]],
) -> None:
    server, runs = receiver
    basic = base64.b64encode(f"alertmanager:{TOKEN}".encode()).decode()
    headers = {"content-type": "application/json; charset=utf-8", "authorization": f"Basic {basic}"}
    assert post(server, json.dumps(PAYLOAD).encode(), headers)[0] == 202
    assert server.drain(10) and len(runs) == 1


def test_receiver_refuses_to_start_without_a_token_unless_loopback_is_allowed(
    tmp_path: Path,
) -> None:
    ledger = Ledger(tmp_path / "ledger.json")
    with pytest.raises(DataError, match="needs a token"):
        serve_alert_webhook("127.0.0.1", 0, ledger, lambda c: "r", token=None)
    with pytest.raises(DataError, match="loopback address only"):
        serve_alert_webhook("0.0.0.0", 0, ledger, lambda c: "r", token=None,
                            allow_unauthenticated=True)  # fmt: skip
    server = serve_alert_webhook("127.0.0.1", 0, ledger, lambda c: "r", token=None,
                                 allow_unauthenticated=True)  # fmt: skip
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert post(server, json.dumps(PAYLOAD).encode(), {"content-type": "application/json"}
                    )[0] == 202  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()


def test_token_is_read_from_a_file_or_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(f"{TOKEN}\n")
    assert load_webhook_token(path, {WEBHOOK_TOKEN_ENV: "other"}) == TOKEN
    assert load_webhook_token(None, {WEBHOOK_TOKEN_ENV: "env-token"}) == "env-token"
    assert load_webhook_token(None, {}) is None
    path.write_text("  \n")
    with pytest.raises(DataError, match="is empty"):
        load_webhook_token(path, {})
    with pytest.raises(DataError, match="--token-file"):
        load_webhook_token(tmp_path / "missing", {})


def test_cli_receiver_answers_401_without_the_token(tmp_path: Path) -> None:
    """``mlops alert-receiver`` as a real process, with the token from a file."""
    import os
    import subprocess
    import sys

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "mlops.cli", "alert-receiver", "--port", str(port),
           "--token-file", str(token_file), "--ledger", str(tmp_path / "ledger.json")]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != WEBHOOK_TOKEN_ENV}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/healthy", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.2)
        url = f"http://127.0.0.1:{port}/"
        req = urllib.request.Request(url, json.dumps(PAYLOAD).encode(),
                                     {"content-type": "application/json"})  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 401 and err.value.headers["www-authenticate"].startswith("Bearer")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    # Without any token the command refuses to start on a non-loopback address.
    refused = subprocess.run([*cmd[:6], "--host", "0.0.0.0", "--ledger", "x.json"], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert refused.returncode == 2 and "needs a token" in refused.stderr
