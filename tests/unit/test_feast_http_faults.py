"""The transformer's Feast HTTP reads against a real HTTP server that fails in each way it can."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlops import features as F
from serving.online import VIEW_FEATURES, FeastHttpSource, FeatureLookupError, OnlineFeatures

pytestmark = pytest.mark.unit

KEYS = {F.WEATHER_VIEW: [("JFK",)]}
Answer = Callable[[int], tuple[int, bytes, float]]


def feast_answer(value: float) -> bytes:
    """``feast serve``'s answer for one entity row: every weather feature = ``value``."""
    names = list(F.ENTITY_KEYS) + list(VIEW_FEATURES[F.WEATHER_VIEW])
    results = [
        {"values": [value], "statuses": ["PRESENT"], "event_timestamps": ["2013-01-01T05:00:00Z"]}
        for _ in names
    ]
    return json.dumps({"metadata": {"feature_names": names}, "results": results}).encode()


@pytest.fixture
def feature_server() -> Iterator[Callable[[Answer], tuple[str, list[int]]]]:
    """Start a server whose n-th answer is ``answer(n)`` = (status, body, delay before it)."""
    servers: list[ThreadingHTTPServer] = []

    def start(answer: Answer) -> tuple[str, list[int]]:
        calls: list[int] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                calls.append(len(calls))
                status, body, delay = answer(len(calls) - 1)
                time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", calls

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def read(url: str, timeout_s: float = 1.0) -> dict[str, object]:
    async def go() -> dict[str, object]:
        source = FeastHttpSource(url, timeout_s=timeout_s)
        lookup = OnlineFeatures(source, timeout_s=timeout_s, fresh_s=0)
        rows = await lookup._read(KEYS)
        return rows[F.WEATHER_VIEW][("JFK",)].values

    return asyncio.run(go())


def test_a_5xx_is_retried_once(feature_server: Callable[[Answer], tuple[str, list[int]]]) -> None:
    url, calls = feature_server(
        lambda n: (503, b"busy", 0) if n == 0 else (200, feast_answer(2.5), 0)
    )
    values = read(url)
    assert len(calls) == 2
    assert set(values.values()) == {2.5}


def test_a_lasting_5xx_fails_with_the_status(
    feature_server: Callable[[Answer], tuple[str, list[int]]],
) -> None:
    url, calls = feature_server(lambda n: (500, b"<html>boom</html>", 0))
    with pytest.raises(FeatureLookupError, match="HTTP 500"):
        read(url)
    assert len(calls) == 2  # one try and one bounded retry, not more


def test_a_4xx_is_not_retried(feature_server: Callable[[Answer], tuple[str, list[int]]]) -> None:
    url, calls = feature_server(lambda n: (422, b'{"detail": "no such service"}', 0))
    with pytest.raises(FeatureLookupError, match="HTTP 422"):
        read(url)
    assert len(calls) == 1


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"not json at all", "not JSON"),
        (b'{"metadata": {}}', "unexpected answer"),
        (  # a feature's value list shorter than the entity rows
            json.dumps(
                {
                    "metadata": {"feature_names": [VIEW_FEATURES[F.WEATHER_VIEW][0]]},
                    "results": [{"values": []}],
                }
            ).encode(),
            "unexpected answer \\(IndexError",
        ),
    ],
)
def test_a_malformed_answer_is_a_lookup_error_naming_it(
    feature_server: Callable[[Answer], tuple[str, list[int]]], body: bytes, reason: str
) -> None:
    url, _ = feature_server(lambda n: (200, body, 0))
    with pytest.raises(FeatureLookupError, match=reason) as err:
        read(url)
    assert "object at 0x" not in str(err.value)


def test_a_hung_server_fails_at_the_deadline(
    feature_server: Callable[[Answer], tuple[str, list[int]]],
) -> None:
    url, _ = feature_server(lambda n: (200, feast_answer(1.0), 3.0))
    started = time.monotonic()
    with pytest.raises(FeatureLookupError, match=r"exceeded 200 ms|timed out"):
        read(url, timeout_s=0.2)
    assert time.monotonic() - started < 1.5


def test_a_refused_connection_names_the_cause() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    with pytest.raises(FeatureLookupError, match="connection failed \\(ConnectError\\)"):
        read(f"http://127.0.0.1:{port}")
