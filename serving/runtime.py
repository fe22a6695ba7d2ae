"""Where the SavedModel runs: in this process, or in a child process of its own.

A model call is ~0.27 ms of TensorFlow for this model whatever the batch size (``packed_session``),
but the Python around it (feeding the inputs, reading the result) needs the GIL. In the
server's process the event loop holds the GIL most of the time, so a call made from a worker
thread waits for it at every step and takes 3-5x longer; measured, it made the model thread the
bottleneck. ``ModelProcess`` runs the model in a child process with its own interpreter: the
server's event loop writes the packed inputs to a pipe and reads the scores when the pipe is
readable; no thread of the server waits for the GIL.

Both take packed inputs (``numeric [n, k] float32``, ``categorical [n, m]`` bytes) and return the
scores of the model's ``serving_default`` signature, bit for bit the same.

A call has a deadline. A child that misses it (hung, stopped) is killed; a child that dies (killed,
crashed) is seen at once through its pipe. Either way the call in flight fails with an error that
names the model process, and the child is started again in the background while ``up`` is False.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from mlops import features as F
from mlops.artifacts import SCORE, SIGNATURE

# The packed inputs' column order: the contract's (``FEATURE_NAMES`` order within each kind).
NUMERIC = F.NUMERIC_FEATURES
CATEGORICAL = F.CATEGORICAL_FEATURES

DEFAULT_CALL_TIMEOUT_S = 5.0
"""Deadline of one model call: ~0.27 ms of graph for this model, so seconds mean a hung process."""

log = logging.getLogger(__name__)


def _ignore(scores: np.ndarray | None, err: BaseException | None) -> None:
    """An ``OnDone`` for a call already answered (a late reply after its deadline)."""


class ModelProcessError(RuntimeError):
    """A model call failed because the model process hung, died or could not start."""


class ModelCallTimeout(ModelProcessError):
    """The model did not answer a call within its deadline."""


# Called with (scores, None) or (None, error) in the event loop when a model call ends.
OnDone = Callable[[np.ndarray | None, BaseException | None], None]


def packed_session(tf: Any, model_dir: str) -> tuple[Any, Any]:
    """The serving signature behind two inputs, run by a session: ``(session, f)``.

    ``f(numeric, categorical)`` takes ``[n, len(NUMERIC)]`` float32 and ``[n, len(CATEGORICAL)]``
    bytes, which the graph splits into the signature's inputs, and returns the signature's
    scores. Closing the session frees the model.

    Why a session and not the eager signature: a call is a few hundred small ops, and measured
    on this model TensorFlow's eager function call costs more than they do. An eager call of an
    empty function is ~115 us; the call runs on the inter-op pool while the caller waits; and the
    TFT layer stays a nested function call of its own. The session inlines every function
    (aggressive function optimization), runs the ops in the calling thread (a negative inter-op
    thread count) and is entered through one prepared callable: ~270 us a call against ~460 us.

    Raises:
        RuntimeError: The SavedModel has no ``serving_default`` signature over the contract.
    """
    from tensorflow.core.protobuf import rewriter_config_pb2, saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(f"{model_dir}/saved_model.pb", "rb") as f:
        saved.ParseFromString(f.read())
    serve = next((m for m in saved.meta_graphs if "serve" in m.meta_info_def.tags), None)
    if serve is None or SIGNATURE not in serve.signature_def:
        raise RuntimeError(f"{model_dir} has no {SIGNATURE!r} signature")
    signature = serve.signature_def[SIGNATURE]
    missing = set(F.FEATURE_NAMES) - set(signature.inputs)
    if missing or SCORE not in signature.outputs:
        raise RuntimeError(
            f"{model_dir}: signature {SIGNATURE!r} lacks inputs {sorted(missing)} "
            f"or output {SCORE!r}"
        )
    config = tf.compat.v1.ConfigProto(
        inter_op_parallelism_threads=-1, intra_op_parallelism_threads=1
    )
    config.graph_options.rewrite_options.function_optimization = (
        rewriter_config_pb2.RewriterConfig.AGGRESSIVE
    )
    graph = tf.Graph()
    with graph.as_default():
        numeric = tf.compat.v1.placeholder(tf.float32, [None, len(NUMERIC)], "numeric")
        categorical = tf.compat.v1.placeholder(tf.string, [None, len(CATEGORICAL)], "categorical")
        columns = dict(zip(NUMERIC, tf.unstack(numeric, axis=1), strict=True))
        columns.update(zip(CATEGORICAL, tf.unstack(categorical, axis=1), strict=True))
        session = tf.compat.v1.Session(graph=graph, config=config)
        tf.compat.v1.saved_model.loader.load(
            session, ["serve"], model_dir,
            input_map={signature.inputs[name].name: columns[name] for name in F.FEATURE_NAMES},
        )  # fmt: skip
        scores = graph.get_tensor_by_name(signature.outputs[SCORE].name)
        return session, session.make_callable(scores, [numeric, categorical])


class SavedModelScorer:
    """The SavedModel loaded in this process.

    Args:
        model_dir: The SavedModel directory.
        call_timeout_s: Deadline of a ``start_call``; None for none. A thread cannot be stopped:
            the late call fails, and the next one waits for the thread.
    """

    up = True  # nothing to restart: the model lives and dies with this process

    def __init__(self, model_dir: str, call_timeout_s: float | None = None) -> None:
        self.call_timeout_s = call_timeout_s
        import tensorflow as tf  # heavy import kept out of module import

        self._session, self._call = packed_session(tf, model_dir)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="score")

    def score(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        scores = self._call(numeric.astype(np.float32, copy=False), categorical)
        return np.asarray(scores, dtype=np.float32).reshape(-1)

    def start_call(self, numeric: np.ndarray, categorical: np.ndarray, on_done: OnDone) -> None:
        """``score`` in a worker thread (it competes with the event loop for the GIL)."""
        loop = asyncio.get_running_loop()
        call = loop.run_in_executor(self._executor, self.score, numeric, categorical)
        timer: asyncio.TimerHandle | None = None

        def finish(scores: np.ndarray | None, err: BaseException | None) -> None:
            nonlocal on_done
            if timer is not None:
                timer.cancel()
            done, on_done = on_done, _ignore
            done(scores, err)

        if self.call_timeout_s is not None:
            timeout = ModelCallTimeout(
                f"model call timed out after {round(self.call_timeout_s, 3)} s"
            )
            timer = loop.call_later(self.call_timeout_s, finish, None, timeout)
        call.add_done_callback(
            lambda f: finish(None, f.exception()) if f.exception() else finish(f.result(), None)
        )

    def ensure_running(self) -> None:
        """Nothing to do: there is no child process."""

    def close(self) -> None:
        self._executor.shutdown(wait=False)
        self._session.close()


def _serve_model(model_dir: str, conn: Connection) -> None:
    """Child process: load the model, then answer ``(numeric, categorical)`` with scores."""
    try:
        scorer = SavedModelScorer(model_dir)
    except BaseException as err:  # reported to the parent, which raises it
        conn.send(("error", f"{type(err).__name__}: {err}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent went away
            return
        if message is None:
            return
        try:
            conn.send(("ok", scorer.score(*message)))
        except Exception as err:  # a failed call; the process keeps serving
            conn.send(("error", f"{type(err).__name__}: {err}"))


class ModelProcess:
    """The SavedModel in a child process, called over a pipe.

    ``start_call`` is driven by the event loop itself: it writes the inputs to the pipe and the
    loop reads the reply when the pipe is readable, so no thread waits for the GIL to pick it up.
    ``score`` is the blocking form. One call at a time (callers batch).

    A call sent to the child must be answered within ``call_timeout_s``; a child that misses it is
    killed. A child that exits is seen when its pipe closes (a watched pipe: at once, even between
    calls) or by ``ensure_running``. Either way the call in flight fails with a
    ``ModelProcessError`` naming the process, and a new child is started in a worker thread;
    ``up`` is False until it has loaded. A call started meanwhile waits for the new child.

    Args:
        model_dir: The SavedModel directory.
        start_timeout_s: How long loading may take (importing TensorFlow included).
        call_timeout_s: Deadline of a call, from sending the inputs to reading the scores; None
            for none.
    """

    def __init__(
        self,
        model_dir: str,
        start_timeout_s: float = 300.0,
        call_timeout_s: float | None = DEFAULT_CALL_TIMEOUT_S,
    ) -> None:
        self.model_dir = model_dir
        self.start_timeout_s = start_timeout_s
        self.call_timeout_s = call_timeout_s
        self._lock = threading.Lock()
        self._proc: Any = None
        self._conn: Connection | None = None
        self._on_done: OnDone | None = None
        self._reader: tuple[asyncio.AbstractEventLoop, int] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._restart: asyncio.Future[None] | None = None
        self._closed = False
        self._start()

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # no forked copy of the server's threads
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_serve_model, args=(self.model_dir, child), name="model", daemon=True
        )
        proc.start()
        child.close()
        if not parent.poll(self.start_timeout_s):
            proc.kill()
            raise ModelProcessError(f"model process did not load {self.model_dir} in time")
        try:
            kind, detail = parent.recv()
        except EOFError as err:
            raise ModelProcessError(
                f"model process exited with {proc.exitcode} while loading {self.model_dir}"
            ) from err
        if kind != "ready":
            proc.join(5)
            raise ModelProcessError(f"model process could not load {self.model_dir}: {detail}")
        if self._closed:  # closed while this child loaded (a restart in a worker thread)
            proc.kill()
            return
        self._proc, self._conn = proc, parent

    def _replace(self) -> None:
        """Reap the old child (killed or dead) and start a new one; runs in a worker thread."""
        old = self._proc
        if old is not None:
            if old.is_alive():
                old.kill()
            old.join(5)
        started = time.monotonic()
        self._start()
        if self._closed:
            return
        log.warning("model process restarted (pid %s) in %.1f s", self.pid,
                    time.monotonic() - started)  # fmt: skip

    def _alive(self) -> bool:
        """Whether the child runs; no system call while a running event loop watches its pipe.

        A watched pipe reports the child's exit at once (EOF, ``_on_readable``), which drops the
        watch, so until then the child counts as running. Asking ``waitpid`` instead cost five
        system calls a request (readiness, dispatch, call): 5 % of the server's CPU.
        """
        if self._reader is not None and self._reader[0].is_running():
            return True
        return self._proc is not None and self._proc.is_alive()

    def _gone(self) -> bool:
        """Whether the child has exited; if so, forget its pipe (the caller starts a new one)."""
        if self._conn is not None and self._alive():
            return False
        self._drop_reader()
        self._conn = None
        log.error("model process is gone (%s); starting it again", self._exit_reason())
        return True

    def _exit_reason(self) -> str:
        code = self._proc.exitcode if self._proc is not None else None
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        return f"exit {code}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def up(self) -> bool:
        """Whether the child is running and not being replaced."""
        return self._restart is None and self._conn is not None and self._alive()

    def ensure_running(self) -> None:
        """From the event loop: watch the child's pipe; start a new child if this one is gone."""
        if self._closed or self._restart is not None or self._on_done is not None:
            return
        loop = asyncio.get_running_loop()
        if self._gone():
            self._restart_in_background(loop)
        else:
            self._watch(loop)

    def score(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        with self._lock:
            if self._gone():
                self._replace()
            assert self._conn is not None
            try:
                self._conn.send((numeric, categorical))
                if self.call_timeout_s is not None and not self._conn.poll(self.call_timeout_s):
                    self._abandon()
                    raise ModelCallTimeout(
                        f"model process timed out after {round(self.call_timeout_s, 3)} s"
                    )
                kind, value = self._conn.recv()
            except (EOFError, OSError) as err:
                self._conn = None
                raise ModelProcessError(f"model process died ({self._exit_reason()})") from err
        if kind != "ok":
            raise ModelProcessError(f"model process: {value}")
        return np.asarray(value)

    def start_call(self, numeric: np.ndarray, categorical: np.ndarray, on_done: OnDone) -> None:
        """Send a call; ``on_done(scores, error)`` runs in the event loop when the reply is read.

        The reply is handled in the pipe's reader callback itself, so the caller can start its
        next call there without another trip through the event loop's queue.
        """
        if self._on_done is not None:
            raise ModelProcessError("model process: one call at a time")
        loop = asyncio.get_running_loop()
        self._on_done = on_done
        if self._restart is None and self._gone():
            self._restart_in_background(loop)
        if self._restart is not None:
            self._restart.add_done_callback(lambda f: self._send(loop, numeric, categorical, f))
            return
        self._send(loop, numeric, categorical, None)

    def _restart_in_background(self, loop: asyncio.AbstractEventLoop) -> None:
        self._restart = loop.run_in_executor(None, self._replace)
        # Registered before any waiting call's callback, so it runs first.
        self._restart.add_done_callback(self._restarted)

    def _restarted(self, restart: asyncio.Future[None]) -> None:
        self._restart = None
        err = restart.exception()
        if err is not None:
            log.error("model process did not restart: %s", err)
        elif self._conn is not None:
            self._watch(asyncio.get_running_loop())

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read the child's pipe in ``loop``: replies, and its closing when the child exits."""
        conn = self._conn
        if conn is None or (self._reader is not None and self._reader[0] is loop):
            return
        self._drop_reader()
        loop.add_reader(conn.fileno(), self._on_readable)
        self._reader = (loop, conn.fileno())

    def _send(
        self, loop: asyncio.AbstractEventLoop, numeric: np.ndarray, categorical: np.ndarray,
        restart: asyncio.Future[None] | None,
    ) -> None:  # fmt: skip
        if restart is not None and restart.exception() is not None:
            self._finish(
                None, ModelProcessError(f"model process did not restart: {restart.exception()}")
            )
            return
        conn = self._conn
        if conn is None:
            self._finish(None, ModelProcessError("model process is not running"))
            return
        self._watch(loop)
        try:
            conn.send((numeric, categorical))
        except OSError as err:
            self._lost(loop, ModelProcessError(f"model process pipe: {err.strerror or err}"))
            return
        if self.call_timeout_s is not None:
            self._timer = loop.call_later(self.call_timeout_s, self._on_timeout, loop)

    def _on_timeout(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        t = self.call_timeout_s or 0.0
        log.error("model process %s timed out after %.1f s; killing it", self.pid, t)
        self._lost(loop, ModelCallTimeout(f"model process timed out after {round(t, 3)} s"))

    def _lost(self, loop: asyncio.AbstractEventLoop, err: ModelProcessError) -> None:
        """The child hung or died: kill it, fail the call in flight, start a new one."""
        self._abandon()
        # Restart first: the failed call's callback may look at ``up`` and dispatch again.
        if not self._closed:
            self._restart_in_background(loop)
        self._finish(None, err)

    def _abandon(self) -> None:
        self._drop_reader()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()  # SIGKILL: a stopped (SIGSTOP) child dies too

    def _finish(self, scores: np.ndarray | None, err: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done(scores, err)

    def _on_readable(self) -> None:
        conn = self._conn
        try:
            kind, value = conn.recv() if conn is not None else ("error", "no pipe")
        except (EOFError, OSError):
            loop = asyncio.get_running_loop()
            if self._proc is not None:
                self._proc.join(0.2)  # the exit status, for the message; EOF means it is exiting
            reason = self._exit_reason()
            log.error("model process %s died (%s); starting it again", self.pid, reason)
            self._lost(loop, ModelProcessError(f"model process died ({reason})"))
            return
        if kind == "ok":
            self._finish(np.asarray(value), None)
        else:
            self._finish(None, ModelProcessError(f"model process: {value}"))

    def _drop_reader(self) -> None:
        if self._reader is not None:
            loop, fd = self._reader
            if not loop.is_closed():
                loop.remove_reader(fd)
            self._reader = None

    def close(self) -> None:
        self._closed = True
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._reader is not None:
                loop, fd = self._reader
                if not loop.is_closed():
                    loop.call_soon_threadsafe(loop.remove_reader, fd)
                self._reader = None
            if self._conn is not None:
                with contextlib.suppress(OSError):
                    self._conn.send(None)
                self._conn.close()
                self._conn = None
            if self._proc is not None:
                self._proc.join(5)
                if self._proc.is_alive():
                    self._proc.kill()
