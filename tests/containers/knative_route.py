"""The traffic split between predictor revisions that Knative's route does for a KServe canary.

KServe turns ``canaryTrafficPercent`` into a Knative route: that share of requests to the
predictor's Service goes to the newest revision, the rest to the last one that was promoted.
There is no Knative here, so this HTTP proxy stands in for the route: the transformer pod's
``--predictor_host`` points at it and each request goes to one revision's pod, drawn by the
weights the test sets from the InferenceService after each rollout step.
"""

from __future__ import annotations

import http.client
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Route:
    """Weighted backends (``host:port`` -> percent), changed while serving."""

    def __init__(self) -> None:
        self._weights: dict[str, int] = {}
        self._lock = threading.Lock()
        self._rng = random.Random(0)
        self.served: dict[str, int] = {}

    def set(self, weights: dict[str, int]) -> None:
        with self._lock:
            self._weights = {b: w for b, w in weights.items() if w > 0}

    def pick(self) -> str:
        with self._lock:
            backends, weights = zip(*self._weights.items(), strict=True)
            backend = self._rng.choices(backends, weights=weights)[0]
            self.served[backend] = self.served.get(backend, 0) + 1
            return backend


def _handler(route: Route) -> type[BaseHTTPRequestHandler]:
    class Forward(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the transformer's client expects

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            host, port = route.pick().rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, body or None, headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            finally:
                conn.close()

        do_GET = do_POST = _forward

        def log_message(self, *args: object) -> None:
            pass

    return Forward


@contextmanager
def serve(route: Route, port: int) -> Iterator[str]:
    """Serve the route on 127.0.0.1:``port``; yields ``host:port``."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(route))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
