"""A small fake Kubernetes API server for the rollout controller's tests, and an RBAC check.

No kube-apiserver runs here (see DESIGN.md), so the real ``kubernetes`` Python client is pointed
at this ``http.server`` instead. It holds namespaced custom objects, answers ``get`` and JSON
merge ``patch`` (RFC 7386, with the ``metadata.resourceVersion`` precondition a real server
applies: 409 when it is stale), refuses every other method and patch type the way the API server
does for a custom resource, and records every request: method, path, query, content type and
body. With ``rules`` (a Role's) it answers 403 for a request they do not allow, as RBAC would.
``delays`` makes it slow, for the controller's timeouts: a GET waits before it is answered, a
PATCH is applied first and answered late (the write lands, its answer is lost to a client that
gave up), and ``failures`` answers the next N requests of a method with 503.

What it does not do: admission webhooks (KServe's validating webhook), the CRD's OpenAPI
validation and pruning, field managers, watches; the tests check objects with the KServe SDK's
types instead.
"""

from __future__ import annotations

import copy
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MERGE_PATCH = "application/merge-patch+json"
VERBS = {"GET": "get", "PATCH": "patch", "PUT": "update", "POST": "create", "DELETE": "delete"}


@dataclass(frozen=True)
class Request:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str | None
    body: Any


@dataclass(frozen=True)
class ResourceAttributes:
    """What RBAC authorizes a resource request by."""

    verb: str
    api_group: str
    resource: str
    namespace: str | None
    name: str | None
    subresource: str | None


def attributes(
    method: str, path: str, query: dict[str, list[str]] | None = None
) -> ResourceAttributes:
    """The RBAC attributes of a request, as the API server derives them from method and path.

    ``/api/v1/namespaces/<ns>/<resource>[/<name>[/<sub>]]`` (core group ``""``) or
    ``/apis/<group>/<version>/namespaces/<ns>/<resource>[/<name>[/<sub>]]``; GET without a
    name is ``list`` (``watch`` with ``?watch=true``), DELETE without one ``deletecollection``.
    """
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"]:
        group, rest = parts[1], parts[3:]
    else:
        raise ValueError(f"not a resource path: {path}")
    namespace = None
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    verb = VERBS[method]
    if name is None and method == "GET":
        verb = "watch" if (query or {}).get("watch", [""])[0] in ("true", "1") else "list"
    if name is None and method == "DELETE":
        verb = "deletecollection"
    return ResourceAttributes(verb, group, resource, namespace, name, sub)


def allowed(rules: list[dict[str, Any]], attrs: ResourceAttributes) -> bool:
    """Whether a Role's ``rules`` allow a request (RBAC's rule match, no wildcards needed)."""
    resource = (
        attrs.resource if attrs.subresource is None else f"{attrs.resource}/{attrs.subresource}"
    )
    for rule in rules:
        if not ({"*", attrs.verb} & set(rule.get("verbs", []))):
            continue
        if not ({"*", attrs.api_group} & set(rule.get("apiGroups", []))):
            continue
        if not ({"*", resource} & set(rule.get("resources", []))):
            continue
        names = rule.get("resourceNames") or []
        if names and attrs.name not in names:
            continue
        return True
    return False


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = apply_merge_patch(out.get(key), value)
    return out


class FakeKubeAPI:
    """Namespaced custom objects behind a real HTTP server on 127.0.0.1.

    Args:
        rules: A Role's rules to enforce (403 otherwise); ``None`` allows everything.
    """

    def __init__(self, rules: list[dict[str, Any]] | None = None) -> None:
        self.rules = rules
        self.objects: dict[str, dict[str, Any]] = {}
        self.requests: list[Request] = []
        self.history: list[dict[str, Any]] = []  # every object a PATCH produced
        self._lock = threading.Lock()
        self._version = 1000
        self._server: ThreadingHTTPServer | None = None
        self.delays: dict[str, float] = {}  # method -> seconds (see the module docstring)
        self.failures: dict[str, int] = {}  # method -> how many more requests answer 503

    @staticmethod
    def path_of(obj: dict[str, Any], plural: str) -> str:
        """The object's REST path (``/apis/<group>/<version>/namespaces/<ns>/<plural>/<name>``)."""
        meta = obj["metadata"]
        return f"/apis/{obj['apiVersion']}/namespaces/{meta['namespace']}/{plural}/{meta['name']}"

    def put_object(self, obj: dict[str, Any], plural: str) -> str:
        """Store an object as a server would return it (uid, resourceVersion, generation)."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", "6f1c2a9e-0000-4000-8000-000000000001")
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        meta["generation"] = 1
        with self._lock:
            self._version += 1
            meta["resourceVersion"] = str(self._version)
            path = self.path_of(obj, plural)
            self.objects[path] = obj
        return path

    def object(self, path: str) -> dict[str, Any]:
        """A copy of the stored object."""
        with self._lock:
            return copy.deepcopy(self.objects[path])

    def patches(self) -> list[Request]:
        """The PATCH requests received."""
        return [r for r in self.requests if r.method == "PATCH"]

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- HTTP ------------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, content_type: str | None,
               raw_body: bytes) -> tuple[int, dict[str, Any]]:  # fmt: skip
        """Serve one request; return status and JSON body."""
        parsed = urllib.parse.urlsplit(raw_path)
        query = urllib.parse.parse_qs(parsed.query)
        try:
            body = json.loads(raw_body) if raw_body else None
        except json.JSONDecodeError:
            body = raw_body.decode(errors="replace")
        with self._lock:
            self.requests.append(Request(method, parsed.path, query, content_type, body))
            failing = self.failures.get(method, 0)
            if failing:
                self.failures[method] = failing - 1
        if failing:
            return 503, _status(503, "ServiceUnavailable", "the server is overloaded")
        if method == "GET" and self.delays.get("GET"):
            time.sleep(self.delays["GET"])
        try:
            attrs = attributes(method, parsed.path, query)
        except (ValueError, IndexError, KeyError):
            return 404, _status(404, "NotFound", f"no route {method} {parsed.path}")
        if self.rules is not None and not allowed(self.rules, attrs):
            return 403, _status(403, "Forbidden", f"{attrs.verb} {attrs.resource} is forbidden")
        with self._lock:
            current = self.objects.get(parsed.path)
            if current is None:
                return 404, _status(404, "NotFound", f"{attrs.resource} {attrs.name} not found")
            if method == "GET":
                return 200, copy.deepcopy(current)
            if method != "PATCH":
                return 405, _status(405, "MethodNotAllowed", f"{method} is not served here")
            if (content_type or "").split(";")[0].strip() != MERGE_PATCH:
                # Custom resources take merge and JSON patches, never strategic merge.
                return 415, _status(415, "UnsupportedMediaType", f"{content_type} not supported")
            if not isinstance(body, dict):
                return 400, _status(400, "BadRequest", "a merge patch must be a JSON object")
            sent = (body.get("metadata") or {}).get("resourceVersion")
            if sent is not None and sent != current["metadata"]["resourceVersion"]:
                return 409, _status(409, "Conflict", "the object has been modified")
            patched = apply_merge_patch(current, body)
            meta = patched["metadata"]
            if patched.get("spec") != current.get("spec"):
                meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
            self._version += 1
            meta["resourceVersion"] = str(self._version)
            self.objects[parsed.path] = patched
            self.history.append(copy.deepcopy(patched))
            answer = copy.deepcopy(patched)
        if self.delays.get("PATCH"):
            time.sleep(self.delays["PATCH"])  # applied, answered late
        return 200, answer

    @contextmanager
    def serve(self) -> Iterator[FakeKubeAPI]:
        """Serve on a free loopback port until the block ends."""
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                status, payload = api.handle(
                    self.command, self.path, self.headers.get("Content-Type"),
                    self.rfile.read(length),
                )  # fmt: skip
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = do_PUT = do_POST = do_DELETE = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(timeout=5)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    """A ``metav1.Status`` failure body."""
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": reason, "code": code}  # fmt: skip
