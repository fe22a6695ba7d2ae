"""The KServe model server bound to loopback, with the platform's error handling and metrics.

KServe 0.14's ``ModelServer`` binds uvicorn to 0.0.0.0 and answers errors without counting them;
``LoopbackModelServer`` binds the address it is given (127.0.0.1 by default), counts every
inference request by protocol, and counts failures by kind (``mlops.telemetry.ERROR_KINDS``) while
answering a 4xx/5xx whose message names the offending field.
"""

from __future__ import annotations

import gc
import logging
import re
from typing import Any

import kserve
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady

from serving.metrics import REQUEST_ERRORS, REQUESTS, SERVED_VERSIONS, model_labels
from serving.online import FeatureLookupError

_INFER_PATH = re.compile(r"^/(v1|v2)/models/([^/:]+)(?::predict|/infer)$")
_MODEL_PATH = re.compile(r"^/v[12]/models/([^/:]+)")


class PredictError(RuntimeError):
    """The model (or the remote predictor) failed on a valid request."""


class CountRequests:
    """Pure ASGI middleware: count inference requests per model and protocol, cheaply."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            m = _INFER_PATH.match(scope["path"])
            if m:
                REQUESTS.labels(*model_labels(m.group(2)), m.group(1)).inc()
        await self.app(scope, receive, send)


def _error_response(request: Request, message: str, status: int, kind: str) -> ORJSONResponse:
    m = _MODEL_PATH.match(request.url.path)
    model, version = model_labels(m.group(1) if m else "")
    REQUEST_ERRORS.labels(model, version, kind).inc()
    return ORJSONResponse({"error": message, "kind": kind}, status_code=status)


async def _invalid_input(request: Request, exc: Exception) -> ORJSONResponse:
    message = str(exc)
    if message.startswith("Unrecognized request format"):  # KServe's JSON decode failure
        message = "body: malformed JSON: " + message.split(":", 1)[-1].strip()
    return _error_response(request, message, 400, "bad_request")


async def _validation_error(request: Request, exc: Exception) -> ORJSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    loc = [p for p in first.get("loc", ()) if isinstance(p, str) and p != "body"]
    where = ".".join(["body", *loc])
    return _error_response(request, f"{where}: {first.get('msg', exc)}", 422, "bad_request")


async def _not_found(request: Request, exc: Exception) -> ORJSONResponse:
    return _error_response(request, str(exc), 404, "bad_request")


async def _lookup_failed(request: Request, exc: Exception) -> ORJSONResponse:
    return _error_response(request, str(exc), 503, "feature_lookup")


async def _predict_failed(request: Request, exc: Exception) -> ORJSONResponse:
    return _error_response(request, str(exc), 502, "predict")


async def _not_ready(request: Request, exc: Exception) -> ORJSONResponse:
    return _error_response(request, str(exc), 503, "internal")


async def _internal(request: Request, exc: Exception) -> ORJSONResponse:
    logging.getLogger(__name__).exception("internal error", exc_info=exc)
    return _error_response(request, f"internal error: {exc!r}", 500, "internal")


HANDLERS = {
    InvalidInput: _invalid_input,
    RequestValidationError: _validation_error,
    ModelNotFound: _not_found,
    ModelNotReady: _not_ready,
    FeatureLookupError: _lookup_failed,
    PredictError: _predict_failed,
    Exception: _internal,
}


class LoopbackModelServer(kserve.ModelServer):
    """``kserve.ModelServer`` on a chosen address, with counted errors and requests."""

    def __init__(self, host: str = "127.0.0.1", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.host = host

    async def _serve_rest(self) -> None:
        from kserve.model_server import app
        from kserve.protocol.rest.server import UvicornServer
        from timing_asgi import TimingMiddleware

        # Same steps as the parent's _serve_rest, with the bind address and handlers changed.
        self._rest_server = UvicornServer(
            app,
            self.http_port,
            self.dataplane,
            self.model_repository_extension,
            log_config=None,
            access_log_format=self.access_log_format,
            workers=self.workers,
        )
        self._rest_server.cfg.host = self.host
        # KServe's TimingMiddleware measures wall and CPU time (getrusage over every thread of the
        # process) per request only to log them on the kserve.trace logger, which serve() silences:
        # it is dropped unless that logger is on. It cost 0.15 ms a request in this process.
        if not logging.getLogger("kserve.trace").isEnabledFor(logging.INFO):
            app.user_middleware = [m for m in app.user_middleware if m.cls is not TimingMiddleware]
        for exc, handler in HANDLERS.items():
            app.add_exception_handler(exc, handler)
        app.add_middleware(CountRequests)
        await self._rest_server.run()


def serve(
    models: list[Any],
    http_port: int,
    host: str = "127.0.0.1",
    workers: int = 1,
    access_log: bool = False,
) -> None:
    """Register ``models`` (loaded) and serve them over HTTP until SIGTERM/SIGINT.

    gRPC is off (the platform speaks REST V1/V2) and the per-request log lines are off: KServe's
    latency line (the stage histograms carry the same figures) and uvicorn's access log (the
    request log and the request counters carry the same facts) unless ``access_log`` is set. A log
    line costs about as much as the rest of a trivial request.
    """
    for model in models:
        SERVED_VERSIONS[model.name] = str(getattr(model, "version", "unknown"))
    server = LoopbackModelServer(
        host=host,
        http_port=http_port,
        workers=workers,
        enable_grpc=False,
        enable_latency_logging=False,
    )
    # The Starlette timing middleware logs one INFO line per request through this logger.
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    if not access_log:
        logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # Everything loaded so far (TensorFlow, Feast, the models: ~600k objects) lives as long as the
    # server: moved out of the collector's sight, a collection scans only what requests allocate.
    gc.collect()
    gc.freeze()
    server.start(models)
