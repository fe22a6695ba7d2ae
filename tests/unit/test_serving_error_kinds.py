"""The answers to failed requests: a 5xx names the kind of failure, never an internal object."""

from __future__ import annotations

import grpc
import pytest
from kserve.errors import InvalidInput

from serving.online import FeatureLookupError
from serving.server import ERRORS, INTERNAL, PredictError, classify

pytestmark = pytest.mark.unit


class Secret:
    """An internal object whose repr() must never reach a caller."""

    def __repr__(self) -> str:
        return "<Secret token=hunter2 at 0x7f00>"


def test_an_unexpected_error_is_answered_by_its_kind_only() -> None:
    known, message = classify(KeyError(Secret()))
    assert known is INTERNAL and (known.http, known.kind) == (500, "internal")
    assert known.grpc == grpc.StatusCode.INTERNAL
    assert message == "internal error (see server log): KeyError"
    assert "hunter2" not in message and "0x" not in message


@pytest.mark.parametrize(
    ("exc", "http", "kind"),
    [
        (InvalidInput("distance: must be a number"), 400, "bad_request"),
        (FeatureLookupError("online feature lookup exceeded 200 ms"), 503, "feature_lookup"),
        (PredictError("predictor failed: ConnectError"), 502, "predict"),
    ],
)
def test_known_errors_keep_their_message_written_for_the_caller(
    exc: Exception, http: int, kind: str
) -> None:
    known, message = classify(exc)
    assert (known.http, known.kind, message) == (http, kind, str(exc))
    assert known is ERRORS[type(exc)]


def answer(exc: Exception) -> tuple[int, dict, dict]:
    """What the REST server's handler answers for ``exc`` (the handler itself, on a request)."""
    import asyncio

    import orjson
    from starlette.requests import Request

    from serving.server import HANDLERS

    scope = {"type": "http", "method": "POST", "path": "/v1/models/flight-delay:predict",
             "headers": [], "query_string": b""}  # fmt: skip
    handler = next(HANDLERS[c] for c in type(exc).__mro__ if c in HANDLERS)
    resp = asyncio.run(handler(Request(scope), exc))
    return resp.status_code, orjson.loads(resp.body), dict(resp.headers)


def test_the_rest_answer_to_an_internal_error_holds_no_repr() -> None:
    status, body, _ = answer(RuntimeError(Secret()))
    assert (status, body["kind"]) == (500, "internal")
    assert "hunter2" not in body["error"] and "RuntimeError" in body["error"]


def test_an_error_that_says_when_to_retry_gets_a_retry_after_header() -> None:
    from kserve.errors import ModelNotReady

    class Overloaded(ModelNotReady):
        retry_after_s = 2

    status, body, headers = answer(Overloaded("flight-delay"))
    assert (status, body["kind"], headers["retry-after"]) == (503, "unavailable", "2")
