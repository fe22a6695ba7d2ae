"""The KServe model server bound to loopback, with the platform's error handling and metrics.

KServe 0.14's ``ModelServer`` binds uvicorn and gRPC to every interface and answers errors without
counting them; ``LoopbackModelServer`` binds the address it is given (127.0.0.1 by default),
counts every inference request by protocol (``v1``, ``v2``, ``grpc``), counts failures by kind
(``mlops.telemetry.ERROR_KINDS``) while answering a 4xx/5xx whose message names the offending
field (or, for a 5xx, the kind of failure: never the ``repr()`` of an internal object), refuses a
request body past ``--max_request_bytes`` with a 413 before anything parses it, and stops on
SIGTERM by finishing the requests in flight, so that the request log is flushed and closed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import kserve
import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse, StreamingResponse
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
from starlette.middleware import Middleware

from serving.metrics import REQUEST_ERRORS, REQUESTS, SERVED_VERSIONS, model_labels
from serving.online import FeatureLookupError

_INFER_PATH = re.compile(r"^/(v1|v2)/models/([^/:]+)(?::predict|/infer)$")
_MODEL_PATH = re.compile(r"^/v[12]/models/([^/:]+)")
_V1_PREDICT = re.compile(r"^/v1/models/([^/:]+):predict$")
_GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"
# A V1 batch of the default 256 instances is ~60 KiB of JSON and the transformer's V2 call to the
# predictor ~100 KiB; 2 MiB leaves room for --max_batch_size in the thousands.
DEFAULT_MAX_REQUEST_BYTES = 2 << 20
log = logging.getLogger(__name__)


class PredictError(RuntimeError):
    """The model (or the remote predictor) failed on a valid request."""


@dataclass(frozen=True)
class ErrorKind:
    """How one class of failure is answered over REST and gRPC, and counted.

    Attributes:
        http: REST status.
        grpc: gRPC status code.
        kind: ``mlops.telemetry.ERROR_KINDS`` label.
        message: The answer's message; ``None`` passes the exception's own text, which for these
            classes is written for the caller (it names a field, an input or a failing stage).
    """

    http: int
    grpc: grpc.StatusCode
    kind: str
    message: str | None = None


ERRORS: dict[type[BaseException], ErrorKind] = {
    InvalidInput: ErrorKind(400, grpc.StatusCode.INVALID_ARGUMENT, "bad_request"),
    ModelNotFound: ErrorKind(404, grpc.StatusCode.NOT_FOUND, "bad_request"),
    # Model down (restarting) or its queue full: the caller may retry, nothing is broken.
    ModelNotReady: ErrorKind(503, grpc.StatusCode.UNAVAILABLE, "unavailable"),
    FeatureLookupError: ErrorKind(503, grpc.StatusCode.UNAVAILABLE, "feature_lookup"),
    PredictError: ErrorKind(502, grpc.StatusCode.INTERNAL, "predict"),
}
# Anything else is a bug: the caller learns its kind, the log gets the traceback.
INTERNAL = ErrorKind(500, grpc.StatusCode.INTERNAL, "internal", "internal error (see server log)")


def classify(exc: BaseException) -> tuple[ErrorKind, str]:
    """The answer to a failed request: its ``ErrorKind`` and the message the caller gets."""
    for cls in type(exc).__mro__:
        if cls in ERRORS:
            known = ERRORS[cls]
            return known, known.message or str(exc)
    log.error("internal error: %s", type(exc).__name__, exc_info=exc)
    return INTERNAL, f"{INTERNAL.message}: {type(exc).__name__}"


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


class LimitBody:
    """Pure ASGI middleware: refuse a body past ``max_bytes`` with a 413 before it is parsed.

    A declared ``Content-Length`` over the cap is refused before a byte of the body is read; a
    body without one (chunked) is read up to the cap and refused the moment it passes it. The body
    is then handed to the app from memory, so nothing downstream reads an unbounded stream.
    """

    def __init__(self, app: Any, max_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, scope: dict[str, Any], send: Any, status: int, message: str) -> None:
        m = _MODEL_PATH.match(scope.get("path", ""))
        REQUEST_ERRORS.labels(*model_labels(m.group(1) if m else ""), "bad_request").inc()
        response = ORJSONResponse({"error": message, "kind": "bad_request"}, status_code=status)
        # The rest of an oversized body is not read: the connection is closed after the answer.
        response.headers["connection"] = "close"
        await response(scope, _no_body, send)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                declared = value
                break
        if declared is not None:
            if not declared.isdigit():
                await self._refuse(scope, send, 400, "Content-Length: not a non-negative integer")
                return
            if int(declared) > self.max_bytes:
                await self._refuse(scope, send, 413, self._too_large(int(declared)))
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, send, 413, self._too_large(size, streamed=True))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return dict(await receive())

        await self.app(scope, replay, send)

    def _too_large(self, size: int, streamed: bool = False) -> str:
        seen = f"more than {self.max_bytes}" if streamed else str(size)
        return f"body: {seen} bytes exceed the limit of {self.max_bytes} (--max_request_bytes)"


async def _no_body() -> dict[str, Any]:
    return {"type": "http.disconnect"}


_JSON_HEADERS = [(b"content-type", b"application/json")]


class FastPredict:
    """Pure ASGI: V1 ``:predict`` requests straight to KServe's data plane, past FastAPI's routing.

    The steps are KServe's ``V1Endpoints.predict``, in its order: the model's readiness, the
    data plane's ``decode``, ``infer`` (the model's ``preprocess``/``predict``/``postprocess``,
    with KServe's stage histograms) and ``encode``; a dict answer is written with orjson, as the
    app's ``ORJSONResponse`` writes it, and a failure is answered by the app's own exception
    handler for its class. What is skipped is FastAPI's per-request machinery: route matching
    over every KServe route, the ``Request`` object, dependency solving, the exception and
    exit-stack middleware. Measured under wrk on the embedded transformer, that machinery was
    45 % of the server's CPU per request. V2 and every other route go through the app.

    Args:
        app: The ASGI app below (FastAPI's middleware stack).
        dataplane: The model server's ``DataPlane``.
        handlers: The app's exception handlers (class -> handler), read at each failure.
    """

    def __init__(self, app: Any, dataplane: Any, handlers: dict[Any, Any]) -> None:
        self.app = app
        self.dataplane = dataplane
        self.handlers = handlers

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            m = _V1_PREDICT.match(scope["path"])
            if m:
                await self._predict(m.group(1), scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _predict(
        self, model_name: str, scope: dict[str, Any], receive: Any, send: Any
    ) -> None:
        dataplane = self.dataplane
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        body = await _read_body(receive)
        if body is None:  # the client went away: nobody to answer
            return
        try:
            if not await dataplane.model_ready(model_name):
                raise ModelNotReady(model_name)
            request, attributes = dataplane.decode(body=body, headers=headers)
            response, response_headers = await dataplane.infer(
                model_name=model_name, request=request, headers=headers
            )
            response, response_headers = dataplane.encode(
                model_name=model_name, response=response, headers=headers,
                req_attributes=attributes,
            )  # fmt: skip
        except Exception as exc:
            await self._failed(exc, scope, receive, send)
            return
        if isinstance(response, bytes | str):
            # A binary CloudEvent: KServe's route answers it as a plain Response with its headers.
            await Response(content=response, headers=response_headers)(scope, receive, send)
            return
        if isinstance(response, AsyncIterator):  # a streamed answer, as KServe's route streams it
            await StreamingResponse(content=response)(scope, receive, send)
            return
        content = orjson.dumps(
            response, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
        )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(content)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": content})

    async def _failed(self, exc: Exception, scope: dict[str, Any], receive: Any, send: Any) -> None:
        handler = next((self.handlers[c] for c in type(exc).__mro__ if c in self.handlers), None)
        if handler is None:  # no handler at all: the app's ServerErrorMiddleware would answer 500
            raise exc
        response = await handler(Request(scope, receive), exc)
        await response(scope, receive, send)


async def _read_body(receive: Any) -> bytes | None:
    """The request body, or None when the client disconnected before sending all of it."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _error_response(
    request: Request, message: str, status: int, kind: str, retry_after_s: int | None = None
) -> ORJSONResponse:
    m = _MODEL_PATH.match(request.url.path)
    model, version = model_labels(m.group(1) if m else "")
    REQUEST_ERRORS.labels(model, version, kind).inc()
    headers = None if retry_after_s is None else {"retry-after": str(retry_after_s)}
    return ORJSONResponse({"error": message, "kind": kind}, status_code=status, headers=headers)


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


async def _classified(request: Request, exc: Exception) -> ORJSONResponse:
    known, message = classify(exc)
    # An overloaded or restarting model says when to come back (serving.predictor).
    retry_after = getattr(exc, "retry_after_s", None)
    return _error_response(request, message, known.http, known.kind, retry_after)


HANDLERS: dict[type[BaseException], Callable[[Request, Exception], Awaitable[ORJSONResponse]]] = {
    **dict.fromkeys(ERRORS, _classified),
    InvalidInput: _invalid_input,
    RequestValidationError: _validation_error,
    Exception: _classified,
}


class CountGrpc(grpc.aio.ServerInterceptor):
    """gRPC's ``ModelInfer``: counted like REST (protocol ``grpc``), failures answered by kind.

    Without it an exception in a model reaches the caller as ``UNKNOWN`` with the exception's
    class and text, and is never counted.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method != _GRPC_INFER:
            return handler
        inner = handler.unary_unary

        async def infer(request: Any, context: grpc.aio.ServicerContext) -> Any:
            labels = model_labels(request.model_name)
            REQUESTS.labels(*labels, "grpc").inc()
            try:
                return await inner(request, context)
            except Exception as exc:
                known, message = classify(exc)
                REQUEST_ERRORS.labels(*labels, known.kind).inc()
                await context.abort(known.grpc, message)

        return grpc.unary_unary_rpc_method_handler(
            infer,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class LoopbackGrpcServer:
    """KServe's V2 gRPC service on a chosen address, counted, with a message size cap."""

    def __init__(
        self, host: str, port: int, dataplane: Any, repository: Any, max_bytes: int
    ) -> None:
        self.host, self.port, self.max_bytes = host, port, max_bytes
        self.dataplane, self.repository = dataplane, repository
        self._server: grpc.aio.Server | None = None

    async def start(self, max_workers: int) -> None:
        from concurrent import futures

        from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
        from kserve.protocol.grpc.servicer import InferenceServicer

        self._server = grpc.aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(CountGrpc(),),
            options=[
                ("grpc.max_receive_message_length", self.max_bytes),
                ("grpc.max_send_message_length", self.max_bytes),
            ],
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(self.dataplane, self.repository), self._server
        )
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._server.add_insecure_port(f"{host}:{self.port}")
        await self._server.start()
        await self._server.wait_for_termination()

    async def stop(self, sig: int | None = None) -> None:
        if self._server is not None:
            await self._server.stop(grace=10)


class LoopbackModelServer(kserve.ModelServer):
    """``kserve.ModelServer`` on a chosen address, with counted errors and requests.

    Args:
        host: Address of the HTTP and gRPC servers.
        grpc_port: Port of the V2 gRPC service; ``0`` leaves it off.
        max_request_bytes: Largest request body (REST) or message (gRPC) accepted.
        fast_predict: V1 ``:predict`` through ``FastPredict`` (see ``configure_app``).
        **kwargs: ``kserve.ModelServer``'s.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        grpc_port: int = 0,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        fast_predict: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(grpc_port=grpc_port, enable_grpc=False, **kwargs)
        self.host = host
        self.max_request_bytes = max_request_bytes
        self.fast_predict = fast_predict
        if grpc_port:
            self.enable_grpc = True
            self._grpc_server = LoopbackGrpcServer(
                host, grpc_port, self.dataplane, self.model_repository_extension,
                max_request_bytes,
            )  # fmt: skip

    def _on_signal(self, sig: int) -> None:
        self._stopping = asyncio.get_running_loop().create_task(self.stop(sig=sig))

    async def _serve_rest(self) -> None:
        from kserve.model_server import app
        from kserve.protocol.rest.server import UvicornServer

        # The parent's stop on SIGTERM: uvicorn finishes the requests in flight and serve()
        # returns, so the caller's cleanup (the request log's flush) runs. Without it the
        # default SIGTERM action kills the process with the log's buffer unwritten.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
            loop.add_signal_handler(sig, self._on_signal, sig)
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
        configure_app(app, self.dataplane, self.max_request_bytes, self.fast_predict)
        await self._rest_server.run()


def configure_app(
    app: Any, dataplane: Any, max_request_bytes: int, fast_predict: bool = True
) -> None:
    """The platform's layers on KServe's FastAPI app (before it serves its first request).

    Args:
        app: KServe's app, its routes registered.
        dataplane: The model server's ``DataPlane``.
        max_request_bytes: Largest body (``LimitBody``).
        fast_predict: Answer V1 ``:predict`` through ``FastPredict``; False leaves it to
            KServe's FastAPI route (the benchmark's baseline of KServe itself).
    """
    from timing_asgi import TimingMiddleware

    # KServe's TimingMiddleware measures wall and CPU time (getrusage over every thread of the
    # process) per request only to log them on the kserve.trace logger, which serve() silences:
    # it is dropped unless that logger is on. It cost 0.15 ms a request in this process.
    if not logging.getLogger("kserve.trace").isEnabledFor(logging.INFO):
        app.user_middleware = [m for m in app.user_middleware if m.cls is not TimingMiddleware]
    for exc, handler in HANDLERS.items():
        app.add_exception_handler(exc, handler)
    if fast_predict:
        # Innermost of the user middleware, so KServe's own (the access logger of
        # --access_log_format) still sees every request.
        app.user_middleware.append(
            Middleware(FastPredict, dataplane=dataplane, handlers=app.exception_handlers)
        )
    app.add_middleware(CountRequests)
    # Added last, so outermost: an oversized body is refused before any other layer runs.
    app.add_middleware(LimitBody, max_bytes=max_request_bytes)


def add_server_args(parser: argparse.ArgumentParser) -> None:
    """The server's own flags, and gRPC off unless ``--grpc_port`` names a port.

    KServe's parser (a parent of the servers' parsers) has ``--grpc_port`` with 8081 by default;
    the platform's default is 0, no gRPC service, so that a port is opened only when asked for.
    """
    parser.add_argument(
        "--max_request_bytes",
        type=int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help="Largest request body (REST, 413 past it) or gRPC message accepted.",
    )
    for action in parser._actions:
        if action.dest == "grpc_port":
            action.help = "Port of the V2 inference gRPC service (0: no gRPC, the default)."
    parser.set_defaults(grpc_port=0)


def serve(
    models: list[Any],
    http_port: int,
    host: str = "127.0.0.1",
    workers: int = 1,
    access_log: bool = False,
    grpc_port: int = 0,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    fast_predict: bool = True,
) -> None:
    """Register ``models`` (loaded) and serve them over HTTP (and gRPC) until SIGTERM/SIGINT.

    gRPC (the V2 inference protocol) is served on ``grpc_port`` when it is not 0. The
    per-request log lines are off: KServe's latency line (the stage histograms carry the same
    figures) and uvicorn's access log (the request log and the request counters carry the same
    facts) unless ``access_log`` is set. A log line costs about as much as the rest of a trivial
    request.
    """
    for model in models:
        SERVED_VERSIONS[model.name] = str(getattr(model, "version", "unknown"))
    server = LoopbackModelServer(
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        max_request_bytes=max_request_bytes,
        fast_predict=fast_predict,
        workers=workers,
        enable_latency_logging=False,
    )
    # The Starlette timing middleware logs one INFO line per request through this logger.
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    if not access_log:
        # uvicorn builds each line's arguments (the quoted path) whenever this logger has a
        # handler, whatever its level: 2 % of a served request's CPU. No handler, no work.
        access = logging.getLogger("uvicorn.access")
        access.setLevel(logging.WARNING)
        access.handlers.clear()
        access.propagate = False
    # Everything loaded so far (TensorFlow, Feast, the models: ~600k objects) lives as long as the
    # server: moved out of the collector's sight, a collection scans only what requests allocate.
    gc.collect()
    gc.freeze()
    server.start(models)
