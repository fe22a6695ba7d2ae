"""The V1 fast path answers exactly as KServe's FastAPI route does, failures included.

Two apps are built the way ``LoopbackModelServer`` builds its app (KServe's routes, then
``serving.server.configure_app``), one with ``FastPredict`` and one without, over the same
models. Every request gets the same status, content type and body from both.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import kserve
import pytest
from fastapi import FastAPI
from fastapi.responses import ORJSONResponse
from kserve.errors import InvalidInput
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.server import RESTServer

from serving.online import FeatureLookupError
from serving.server import FastPredict, PredictError, configure_app

pytestmark = pytest.mark.unit


class Echo(kserve.Model):
    """Answers each instance's ``x`` doubled; fails the way the body asks it to."""

    def __init__(self, name: str, ready: bool = True) -> None:
        super().__init__(name)
        self.ready = ready

    async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        fail = payload.get("fail") if isinstance(payload, dict) else None
        if fail == "input":
            raise InvalidInput("instances[0].x: must be a number")
        if fail == "lookup":
            raise FeatureLookupError("online feature lookup exceeded 200 ms")
        if fail == "predict":
            raise PredictError("predictor failed: ConnectError")
        if fail == "bug":
            raise KeyError("internal detail")
        if fail == "stream":
            return chunks()
        return {"predictions": [2 * row["x"] for row in payload["instances"]], "v": "1"}


async def chunks() -> AsyncIterator[bytes]:
    for part in (b'{"part": 1}', b'{"part": 2}'):
        yield part


def build_app(fast: bool) -> Any:
    repository = ModelRepository()
    for model in (Echo("echo"), Echo("down", ready=False)):
        repository.update(model)
    dataplane = DataPlane(model_registry=repository)
    app = FastAPI(default_response_class=ORJSONResponse)
    RESTServer(
        app, dataplane, ModelRepositoryExtension(model_registry=repository)
    ).create_application()
    configure_app(app, dataplane, max_request_bytes=4096, fast_predict=fast)
    return app


REQUESTS: list[tuple[str, bytes]] = [
    ("/v1/models/echo:predict", b'{"instances": [{"x": 1.5}, {"x": 2}]}'),
    ("/v1/models/echo:predict", b'{"instances": [{"x": 1.5}], "fail": "input"}'),
    ("/v1/models/echo:predict", b'{"instances": [{"x": 1.5}], "fail": "lookup"}'),
    ("/v1/models/echo:predict", b'{"instances": [{"x": 1.5}], "fail": "predict"}'),
    ("/v1/models/echo:predict", b'{"instances": [{"x": 1.5}], "fail": "bug"}'),
    ("/v1/models/echo:predict", b'{"instances": [{"x": '),  # malformed JSON
    ("/v1/models/echo:predict", b"x" * 5000),  # past the body limit
    ("/v1/models/nobody:predict", b'{"instances": []}'),
    ("/v1/models/down:predict", b'{"instances": [{"x": 1}]}'),
    ("/v1/models/echo:predict", b'{"instances": [], "fail": "stream"}'),
]


async def answers(app: Any) -> list[tuple[int, str, Any]]:
    # The route re-raises an unhandled error after answering (uvicorn logs it): not a failure here.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    out = []
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for path, body in REQUESTS:
            resp = await client.post(
                path, content=body, headers={"content-type": "application/json"}
            )
            body = resp.content.decode()
            parsed = json.loads(body) if body.startswith(("{", "[")) and "}{" not in body else body
            out.append((resp.status_code, resp.headers.get("content-type"), parsed))
    return out


def test_the_fast_path_answers_as_the_kserve_route() -> None:
    fast_app, route_app = build_app(fast=True), build_app(fast=False)
    assert any(m.cls is FastPredict for m in fast_app.user_middleware)
    assert not any(m.cls is FastPredict for m in route_app.user_middleware)
    fast, route = asyncio.run(answers(fast_app)), asyncio.run(answers(route_app))
    assert fast == route
    statuses = [status for status, _, _ in fast]
    assert statuses == [200, 400, 503, 502, 500, 400, 413, 404, 503, 200]
    assert fast[-1][2] == '{"part": 1}{"part": 2}'
    assert fast[0][2] == {"predictions": [3.0, 4], "v": "1"}
    assert fast[1][2] == {"error": "instances[0].x: must be a number", "kind": "bad_request"}
    assert fast[4][2]["error"] == "internal error (see server log): KeyError"
