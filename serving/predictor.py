"""KServe predictor: loads a registry version's SavedModel and scores full feature rows.

Run as ``python -m serving.predictor --model_name=flight-delay --model_dir=DIR``. It takes every
feature of ``mlops.features.FEATURE_NAMES`` (the transformer adds the Feast ones): V1
``{"instances": [{feature: value, ...}]}`` with ``null`` for missing, or V2 with one input per
feature (FP32 / BYTES, shape ``[n]``). It answers the score per row.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kserve
import numpy as np
from kserve.errors import InvalidInput, ModelNotReady
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

from mlops import features as F
from mlops.artifacts import SCORE
from mlops.registry import version_from_uri
from mlops.rollout import STORAGE_URI_ENV
from serving import metrics as M
from serving.runtime import (
    CATEGORICAL,
    DEFAULT_CALL_TIMEOUT_S,
    NUMERIC,
    ModelProcess,
    ModelProcessError,
    SavedModelScorer,
)
from serving.server import PredictError, add_server_args
from serving.validation import RequestError, v2_input_types, validate_v2_inputs

# Rows waiting for the model past which a request is refused (503): ~64 full batches, well under a
# second of model time, so a refused client retries rather than queueing behind a stalled model.
DEFAULT_MAX_QUEUE_ROWS = 4096
RETRY_AFTER_S = 1


def version_of(model_dir: str | Path) -> str:
    """The registry version of a model directory (``.../versions/<n>/model``), else its name."""
    version = version_from_uri(str(model_dir))
    return Path(model_dir).name if version is None else str(version)


def served_version(flag: str | None, model_dir: str, environ: Mapping[str, str]) -> str:
    """The registry version a predictor labels its metrics and answers with.

    KServe mounts the version named by the container's STORAGE_URI at /mnt/models, which loses
    the registry path: the URI says which version this pod serves (canary or stable).
    """
    return flag or version_of(environ.get(STORAGE_URI_ENV) or model_dir)


def _float(v: Any) -> float:
    return math.nan if v is None else float(v)


def _bytes(v: Any) -> bytes:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return b""
    return v if isinstance(v, bytes) else str(v).encode()


@dataclass(frozen=True)
class Inputs:
    """Model inputs of ``n`` rows, packed: what the packed signature takes.

    Attributes:
        numeric: ``[n, len(NUMERIC)]`` float32, NaN where missing.
        categorical: ``[n, len(CATEGORICAL)]`` object array of bytes, ``b""`` where missing.
    """

    numeric: np.ndarray
    categorical: np.ndarray

    def __len__(self) -> int:
        return int(self.numeric.shape[0])

    def column(self, name: str) -> np.ndarray:
        """One feature's values (a view into the packed arrays)."""
        if name in NUMERIC:
            return self.numeric[:, NUMERIC.index(name)]
        return self.categorical[:, CATEGORICAL.index(name)]

    @staticmethod
    def concat(parts: list[Inputs]) -> Inputs:
        if len(parts) == 1:
            return parts[0]
        return Inputs(
            np.concatenate([p.numeric for p in parts]),
            np.concatenate([p.categorical for p in parts]),
        )


def rows_to_inputs(rows: list[dict[str, Any]]) -> Inputs:
    """Full feature rows to packed inputs (``None``/NaN missing); a bad value names its feature."""
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping):
            raise InvalidInput(f"instances[{i}]: each instance must be an object")
    try:
        numeric = np.array([[_float(r.get(n)) for n in NUMERIC] for r in rows], dtype=np.float32)
        categorical = np.array(
            [[_bytes(r.get(n)) for n in CATEGORICAL] for r in rows], dtype=object
        )
    except (TypeError, ValueError):
        for name in NUMERIC:
            for r in rows:
                try:
                    _float(r.get(name))
                except (TypeError, ValueError) as err:
                    raise InvalidInput(f"{name}: {err}") from err
        raise
    return Inputs(
        numeric.reshape(len(rows), len(NUMERIC)), categorical.reshape(len(rows), len(CATEGORICAL))
    )


def columns_to_inputs(columns: dict[str, Any]) -> Inputs:
    """Per-feature value sequences (V2 inputs) to packed inputs."""
    try:
        numeric = np.stack(
            [np.array([_float(v) for v in columns[n]], dtype=np.float32) for n in NUMERIC], axis=1
        )
    except (TypeError, ValueError) as err:
        raise InvalidInput(f"numeric input: {err}") from err
    categorical = np.stack(
        [np.array([_bytes(v) for v in columns[n]], dtype=object) for n in CATEGORICAL], axis=1
    )
    return Inputs(numeric, categorical)


@dataclass
class Batch:
    """A decoded batch on its way through a model: columns plus what the response needs."""

    inputs: Inputs
    v2: bool
    request_id: str = ""


class ModelUnavailable(ModelNotReady, PredictError):
    """The model cannot take a request now (queue full, model process restarting): retry later.

    A ``ModelNotReady`` (503) for the server, and a ``PredictError`` for the embedded transformer,
    which passes those on unchanged.

    Attributes:
        retry_after_s: Seconds a client should wait before retrying (``Retry-After``).
    """

    def __init__(self, model_name: str, detail: str, retry_after_s: int = RETRY_AFTER_S) -> None:
        super().__init__(model_name)
        self.error_msg = f"model {model_name}: {detail}"
        self.retry_after_s = retry_after_s


class FlightDelayPredictor(kserve.Model):
    """Runs the flight-delay SavedModel's ``serving_default`` signature.

    Args:
        name: Model name on the V1/V2 endpoints.
        model_dir: SavedModel directory (a registry version's ``model/``).
        version: Version label for metrics and responses (default: from ``model_dir``).
        isolate: Run the model in child processes (``serving.runtime.ModelProcess``) rather than
            in this one; the default, see that module for why.
        workers: Model processes; calls run on idle ones in parallel. One is fastest on two
            cores (measured: two gave 0.8x the throughput).
        call_timeout_s: Deadline of a model call; a model process that misses it is killed and
            started again, and the call's requests fail (502). None for no deadline.
        max_queue_rows: Rows that may wait for the model; a request past it is refused with a
            503 and ``Retry-After`` (one request alone is always taken).

    ``ready`` (the V1/V2 model-ready endpoints) is False while no model process is up, e.g.
    while a hung or dead one is started again; requests then fail at once with a 503.
    """

    def __init__(
        self,
        name: str,
        model_dir: str,
        version: str | None = None,
        isolate: bool = True,
        workers: int = 1,
        call_timeout_s: float | None = DEFAULT_CALL_TIMEOUT_S,
        max_queue_rows: int = DEFAULT_MAX_QUEUE_ROWS,
    ) -> None:
        if call_timeout_s is not None and call_timeout_s <= 0:
            raise ValueError(f"call_timeout_s: must be > 0, got {call_timeout_s}")
        if max_queue_rows < 1:
            raise ValueError(f"max_queue_rows: must be >= 1, got {max_queue_rows}")
        self._loaded = False  # before super(), whose __init__ sets ``ready``
        super().__init__(name)
        self.model_dir = model_dir
        self.version = version or version_of(model_dir)
        self.isolate = isolate
        self.workers = workers if isolate else 1
        self.call_timeout_s = call_timeout_s
        self.max_queue_rows = max_queue_rows
        self._queued_rows = 0
        self._scorers: list[SavedModelScorer | ModelProcess] = []
        self._idle: list[SavedModelScorer | ModelProcess] = []
        self._queue: list[tuple[Inputs, asyncio.Future[np.ndarray]]] = []
        self._dispatch_scheduled = False
        self._batch_rows = M.MODEL_BATCH_ROWS.labels(name, self.version)
        self.ready = False

    @property
    def ready(self) -> bool:
        """Loaded, and at least one model process up (not hung, dead or restarting)."""
        return self._loaded and any(s.up for s in self._scorers)

    @ready.setter
    def ready(self, value: bool) -> None:
        self._loaded = value

    async def healthy(self) -> bool:
        """Readiness, after starting again any model process found gone (see ``ready``)."""
        for scorer in self._scorers:
            scorer.ensure_running()
        return self.ready

    def load(self) -> bool:
        """Load the SavedModel: in child processes (``isolate``) or in this one.

        Once loaded, a later call (KServe calls ``load`` on a request to a model not ready)
        leaves the model processes to restart on their own.
        """
        if self._scorers:
            return self.ready
        if self.isolate:
            self._scorers = [ModelProcess(self.model_dir, call_timeout_s=self.call_timeout_s)
                             for _ in range(self.workers)]  # fmt: skip
        else:
            self._scorers = [SavedModelScorer(self.model_dir, self.call_timeout_s)]
        self._idle = list(self._scorers)
        self.ready = True
        return self.ready

    def stop(self) -> None:
        for scorer in self._scorers:
            scorer.close()
        super().stop()

    def score(self, inputs: Inputs) -> np.ndarray:
        """Score packed inputs (blocking; the embedded transformer goes through score_batched)."""
        if not self._scorers:
            raise RuntimeError(f"model {self.name} is not loaded")
        return self._scorers[0].score(inputs.numeric, inputs.categorical)

    async def score_batched(self, inputs: Inputs) -> np.ndarray:
        """Score ``inputs`` together with the other requests waiting for the model.

        A model call costs about the same for 1 row or 64, so requests share calls: each call
        takes every request that arrived while the model workers were busy. A call runs in a
        model process (or a worker thread with ``isolate=False``) while the event loop keeps
        serving; its reply starts the next call on the next loop turn, as a request finding an
        idle worker does: there is no batching timer.
        """
        n = len(inputs)
        if not self.ready:
            raise ModelUnavailable(self.name, "no model process is up (restarting); retry later")
        if self._queued_rows and self._queued_rows + n > self.max_queue_rows:
            raise ModelUnavailable(
                self.name,
                f"queue full ({self._queued_rows} rows waiting, max_queue_rows "
                f"{self.max_queue_rows}); retry later",
            )
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[np.ndarray] = loop.create_future()
        self._queue.append((inputs, fut))
        self._queued_rows += n
        if self._idle:
            self._schedule_dispatch(loop)
        return await fut

    def _schedule_dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Dispatch on the next loop turn (once), so requests read in this turn join the call."""
        if not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        """Give everything queued to one idle worker that is up."""
        self._dispatch_scheduled = False
        if not self._queue:
            return
        idle_up = [s for s in self._idle if s.up]
        if not idle_up:
            if not any(s.up for s in self._scorers):
                # Every model process is restarting (tens of seconds): fail now, not then.
                items, self._queue, self._queued_rows = self._queue, [], 0
                down = ModelUnavailable(self.name, "model process restarting; retry later")
                self._deliver(items, None, down)
            return  # a busy worker that is up dispatches when its call ends
        items, self._queue, self._queued_rows = self._queue, [], 0
        try:
            merged = Inputs.concat([inputs for inputs, _ in items])
        except Exception as err:
            self._deliver(items, None, err)
            return
        scorer = idle_up[-1]
        self._idle.remove(scorer)
        self._batch_rows.observe(len(merged))
        scorer.start_call(
            merged.numeric,
            merged.categorical,
            lambda scores, err: self._call_done(items, scorer, scores, err),
        )

    def _call_done(
        self, items: list[Any], scorer: Any, scores: np.ndarray | None, err: BaseException | None
    ) -> None:
        self._idle.append(scorer)
        if isinstance(err, ModelProcessError):
            # 502 naming the model process ("timed out after 5.0 s", "died (killed by SIGKILL)").
            failed = PredictError(f"model {self.name}: {err}")
            failed.__cause__ = err
            err = failed
        self._deliver(items, scores, err)
        # The requests that queued during this call go on the next loop turn, not now: the
        # callbacks already due then (requests read in this turn) join the call. Measured with
        # 8 connections: 4.0 rows a call instead of 3.75, and ~7 % more requests a second.
        self._schedule_dispatch(asyncio.get_running_loop())

    @staticmethod
    def _deliver(items: list[Any], scores: np.ndarray | None, err: BaseException | None) -> None:
        start = 0
        for inputs, fut in items:
            n = len(inputs)
            if not fut.done():
                if err is not None or scores is None:
                    fut.set_exception(err or RuntimeError("no scores"))
                else:
                    fut.set_result(scores[start : start + n])
            start += n

    def get_input_types(self) -> list[dict[str, Any]]:
        return [
            {"name": n, "datatype": "FP32" if n in F.NUMERIC_FEATURES else "BYTES", "shape": [-1]}
            for n in F.FEATURE_NAMES
        ]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [{"name": SCORE, "datatype": "FP32", "shape": [-1]}]

    async def preprocess(
        self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None
    ) -> Batch:
        rid = (headers or {}).get("x-request-id", "")
        if isinstance(payload, InferRequest):
            # Checked like the transformer's inputs, against this model's declared inputs, before
            # a tensor becomes an array; the batch is bounded by the request body cap.
            try:
                cols = validate_v2_inputs(
                    payload.inputs, v2_input_types(self.get_input_types()), None
                )
            except RequestError as err:
                raise InvalidInput(str(err)) from err
            return Batch(columns_to_inputs(cols), v2=True, request_id=rid)
        instances = payload.get("instances") if isinstance(payload, dict) else None
        if not isinstance(instances, list) or not instances:
            raise InvalidInput('instances: expected a non-empty list under "instances"')
        return Batch(rows_to_inputs(instances), v2=False, request_id=rid)

    async def predict(
        self, payload: Batch, headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferResponse:
        scores = await self.score_batched(payload.inputs)
        if payload.v2:
            out = InferOutput(SCORE, [len(scores)], "FP32", data=[float(s) for s in scores])
            return InferResponse(
                response_id=payload.request_id,
                model_name=self.name,
                infer_outputs=[out],
                model_version=self.version,
                # KServe 0.14's REST client (InferResponse.from_bytes) drops model_version; a
                # transformer in front of a canary reads the version from here instead.
                parameters={"model_version": self.version},
            )
        return {"predictions": [float(s) for s in scores], "model_version": self.version}


def v2_request(packed: Inputs, model_name: str, request_id: str) -> InferRequest:
    """Packed inputs as a V2 request (what a two-process transformer sends the predictor)."""
    inputs = []
    for name in F.FEATURE_NAMES:
        col = packed.column(name)
        if name in F.NUMERIC_FEATURES:
            # JSON has no NaN: a missing number travels as null.
            data = [None if math.isnan(v) else float(v) for v in col]
            inputs.append(InferInput(name, [len(col)], "FP32", data=data))
        else:
            inputs.append(InferInput(name, [len(col)], "BYTES", data=[v.decode() for v in col]))
    return InferRequest(model_name=model_name, infer_inputs=inputs, request_id=request_id)


def build_parser() -> argparse.ArgumentParser:
    """The KServe model server's flags plus the predictor's."""
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_dir", required=True, help="SavedModel directory (a registry "
                        "version's model/ folder).")  # fmt: skip
    parser.add_argument("--model_version", default=None, help="Version label for metrics.")
    parser.add_argument("--host", default="127.0.0.1", help="Address to bind the HTTP server.")
    add_model_runtime_args(parser)
    add_server_args(parser)
    return parser


def add_model_runtime_args(parser: argparse.ArgumentParser) -> None:
    """Flags of where the model runs (shared by the predictor and the embedded transformer)."""
    parser.add_argument("--model_workers", type=int, default=1,
                        help="Model processes serving calls in parallel.")  # fmt: skip
    parser.add_argument("--model_in_process", action="store_true",
                        help="Run the model in the server process (no child process).")  # fmt: skip
    parser.add_argument("--model_call_timeout_s", type=float, default=DEFAULT_CALL_TIMEOUT_S,
                        help="Deadline of a model call; a model process past it is killed and "
                        "restarted (0: no deadline).")  # fmt: skip
    parser.add_argument("--max_queue_rows", type=int, default=DEFAULT_MAX_QUEUE_ROWS,
                        help="Rows that may wait for the model; past it a request gets a 503 "
                        "with Retry-After.")  # fmt: skip


def model_runtime_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``FlightDelayPredictor`` keyword arguments from the ``add_model_runtime_args`` flags."""
    return {
        "isolate": not args.model_in_process,
        "workers": args.model_workers,
        "call_timeout_s": args.model_call_timeout_s or None,
        "max_queue_rows": args.max_queue_rows,
    }


def main(argv: list[str] | None = None) -> int:
    """Serve the predictor alone (the cluster topology's second process)."""
    from serving.server import serve

    args = build_parser().parse_args(argv)
    version = served_version(args.model_version, args.model_dir, os.environ)
    model = FlightDelayPredictor(args.model_name, args.model_dir, version,
                                 **model_runtime_kwargs(args))  # fmt: skip
    model.load()
    serve([model], http_port=args.http_port, host=args.host, workers=args.workers,
          grpc_port=args.grpc_port, max_request_bytes=args.max_request_bytes)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
