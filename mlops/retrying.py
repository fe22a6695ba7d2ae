"""Bounded retry with exponential backoff for idempotent outbound calls.

Only calls that are safe to repeat go through :func:`retry_call`: a read, a replace (the
Pushgateway's ``PUT``) or a find-or-create. A call that could act twice (starting a KFP run) gets
a timeout but no retry, and its error says that it may have taken effect.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class RetryError(RuntimeError):
    """An outbound call failed on every attempt; the message names the call and the last error."""


def retry_call(
    call: Callable[[], T],
    what: str,
    *,
    attempts: int = 3,
    backoff_s: float = 0.5,
    retryable: Callable[[BaseException], bool] = lambda err: True,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``call`` until it succeeds, at most ``attempts`` times, sleeping between tries.

    The sleep doubles after each failure (``backoff_s``, ``2 * backoff_s``, ...), so a briefly
    unavailable server is given time without an unbounded wait.

    Args:
        call: The idempotent call.
        what: What the call does, for the error message (e.g. "push to pushgateway:9091").
        attempts: Most tries in all (at least 1).
        backoff_s: Sleep before the second try.
        retryable: Whether an error is worth another try (a timeout, a 5xx); any other error
            is raised at once.
        sleep: The sleep function (a test may record the delays).

    Returns:
        What ``call`` returned.

    Raises:
        RetryError: Every attempt failed with a retryable error.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    delay = backoff_s
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as err:
            if not retryable(err):
                raise
            if attempt == attempts:
                raise RetryError(
                    f"{what} failed after {attempts} attempts: {type(err).__name__}: {err}"
                ) from err
            log.warning("%s: try %d/%d failed: %s: %s", what, attempt, attempts,
                        type(err).__name__, err)  # fmt: skip
        sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")  # the loop returns or raises
