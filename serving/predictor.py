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
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kserve
import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

from mlops import features as F

SIGNATURE = "serving_default"
SCORE = "score"


def version_of(model_dir: str | Path) -> str:
    """The registry version of a model directory (``.../versions/<n>/model``), else its name."""
    m = re.search(r"versions/([^/]+)/model/?$", str(model_dir))
    return m.group(1) if m else Path(model_dir).name


def _float(v: Any) -> float:
    return math.nan if v is None else float(v)


def _bytes(v: Any) -> bytes:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return b""
    return v if isinstance(v, bytes) else str(v).encode()


def rows_to_columns(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Full feature rows to the serving contract's columns (float32 with NaN, bytes with b"")."""
    cols: dict[str, np.ndarray] = {}
    try:
        for name in F.NUMERIC_FEATURES:
            cols[name] = np.array([_float(r.get(name)) for r in rows], dtype=np.float32)
        for name in F.CATEGORICAL_FEATURES:
            cols[name] = np.array([_bytes(r.get(name)) for r in rows], dtype=object)
    except (TypeError, ValueError) as err:
        raise InvalidInput(f"{name}: {err}") from err
    return cols


@dataclass
class Batch:
    """A decoded batch on its way through a model: columns plus what the response needs."""

    columns: dict[str, np.ndarray]
    v2: bool
    request_id: str = ""


class FlightDelayPredictor(kserve.Model):
    """Runs the flight-delay SavedModel's ``serving_default`` signature."""

    def __init__(self, name: str, model_dir: str, version: str | None = None) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.version = version or version_of(model_dir)
        self._fn: Any = None
        self._queue: list[tuple[dict[str, np.ndarray], asyncio.Future[np.ndarray]]] = []
        self._flush_scheduled = False
        self.ready = False

    def load(self) -> bool:
        import tensorflow as tf  # heavy import kept out of module import

        try:
            # One row is microseconds of math: TF's thread pools only contend with the event loop.
            tf.config.threading.set_inter_op_parallelism_threads(1)
            tf.config.threading.set_intra_op_parallelism_threads(1)
        except RuntimeError:  # the runtime was already initialised in this process
            pass
        self._tf = tf
        model = tf.saved_model.load(self.model_dir)
        if SIGNATURE not in model.signatures:
            raise RuntimeError(f"{self.model_dir} has no {SIGNATURE!r} signature")
        self._model = model  # keeps the signature's resources alive
        self._fn = model.signatures[SIGNATURE]
        self.ready = True
        return self.ready

    def score(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """Score contract columns in-process (the embedded transformer calls this directly)."""
        tf = self._tf
        tensors = {
            name: tf.constant(columns[name], dtype=tf.float32 if name in F.NUMERIC_FEATURES
                              else tf.string)
            for name in F.FEATURE_NAMES
        }  # fmt: skip
        return self._fn(**tensors)[SCORE].numpy().reshape(-1)

    async def score_batched(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """Score ``columns`` together with the other requests of this event-loop turn.

        A TF signature call costs ~2 ms whatever the batch size, so the requests that arrive
        together (one loop iteration; no timer, so an idle server adds no delay) share one call.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[np.ndarray] = loop.create_future()
        self._queue.append((columns, fut))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        self._flush_scheduled = False
        items, self._queue = self._queue, []
        try:
            merged = {n: np.concatenate([c[n] for c, _ in items]) for n in F.FEATURE_NAMES}
            scores = self.score(merged)
        except Exception as err:  # every waiting request gets the failure
            for _, fut in items:
                if not fut.done():
                    fut.set_exception(err)
            return
        start = 0
        for cols, fut in items:
            n = len(cols[F.FEATURE_NAMES[0]])
            if not fut.done():
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
            by_name = {i.name: i for i in payload.inputs}
            missing = [n for n in F.FEATURE_NAMES if n not in by_name]
            if missing:
                raise InvalidInput(f"{missing[0]}: missing input")
            cols = {}
            for name in F.FEATURE_NAMES:
                data = by_name[name].as_numpy().reshape(-1)
                if name in F.NUMERIC_FEATURES:
                    cols[name] = np.array([_float(v) for v in data], dtype=np.float32)
                else:
                    cols[name] = np.array([_bytes(v) for v in data], dtype=object)
            return Batch(cols, v2=True, request_id=rid)
        instances = payload.get("instances") if isinstance(payload, dict) else None
        if not isinstance(instances, list) or not instances:
            raise InvalidInput('instances: expected a non-empty list under "instances"')
        return Batch(rows_to_columns(instances), v2=False, request_id=rid)

    async def predict(
        self, payload: Batch, headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferResponse:
        scores = await self.score_batched(payload.columns)
        if payload.v2:
            out = InferOutput(SCORE, [len(scores)], "FP32", data=[float(s) for s in scores])
            return InferResponse(
                response_id=payload.request_id,
                model_name=self.name,
                infer_outputs=[out],
                model_version=self.version,
            )
        return {"predictions": [float(s) for s in scores], "model_version": self.version}


def v2_request(columns: dict[str, np.ndarray], model_name: str, request_id: str) -> InferRequest:
    """Contract columns as a V2 request (what a two-process transformer sends the predictor)."""
    inputs = []
    for name in F.FEATURE_NAMES:
        col = columns[name]
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Serve the predictor alone (the cluster topology's second process)."""
    from serving.server import serve

    args = build_parser().parse_args(argv)
    model = FlightDelayPredictor(args.model_name, args.model_dir, args.model_version)
    model.load()
    serve([model], http_port=args.http_port, host=args.host, workers=args.workers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
