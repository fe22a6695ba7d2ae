"""KServe transformer: validates a flight request, adds the Feast online features, calls the model.

Run as ``python -m serving.transformer --model_name=flight-delay --predictor_host=HOST:PORT``
(the cluster's two-process topology: the predictor is ``serving.predictor``) or with
``--model_dir=DIR`` (the embedded default: the predictor is registered in the same KServe model
server and called in-process, its SavedModel running in a model process, see
``serving.runtime``; both models answer on their endpoints, the predictor as
``<model_name>-predictor``). Features come from ``--feast_repo`` (Feast SDK) or
``--feast_server_url`` (Feast feature server over HTTP).

Request (V1): ``{"instances": [{"carrier": "UA", "origin": "EWR", "dest": "IAH",
"distance": 1400, "sched_dep_hour": 5, "day_of_week": 1, "month": 1, "tailnum": "N14228",
"event_timestamp": "2013-06-14T16:00:00Z"}]}`` (``event_timestamp``, the prediction moment, is
optional: the real-time features' staleness policy is applied against it, else against the
server's clock; see ``serving.online`` and docs/serving.md);
V2: one input per field, shape ``[n]``, over REST or, with ``--grpc_port=PORT`` (0, the default,
serves no gRPC), over KServe's V2 gRPC service. Response: the delay probability per row. A body
past ``--max_request_bytes`` (2 MiB) is refused with a 413 (``serving.server``).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kserve
import numpy as np
import orjson
from kserve.errors import InvalidInput
from kserve.model import PredictorConfig
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from mlops import features as F
from mlops.artifacts import SCORE
from mlops.registry import CANDIDATE_SUFFIX
from serving import metrics as M
from serving.online import (
    MISSING_POLICIES,
    FeastHttpSource,
    FeastSdkSource,
    OnlineFeatures,
    entity_keys_of_repo,
)
from serving.predictor import (
    FlightDelayPredictor,
    Inputs,
    add_model_runtime_args,
    model_runtime_kwargs,
    rows_to_inputs,
    v2_request,
)
from serving.server import PredictError, add_server_args
from serving.validation import (
    DEFAULT_MAX_BATCH,
    OPTIONAL_FIELDS,
    RequestError,
    ServingSchema,
    load_schema,
    v2_columns_to_instances,
    v2_input_types,
    validate_instances,
    validate_v2_inputs,
)

# Distinct versions a remote transformer labels series with (stable and canary, with room).
MAX_ANSWERED_VERSIONS = 8

# No log unless --request_log is given: a relative default would land on the working directory,
# read-only in the chart's pods. `mlops serve` passes its own path under runs/.
DEFAULT_REQUEST_LOG: Path | None = None
DEFAULT_REQUEST_LOG_MAX_MB = 64.0
# Rotated files kept per process (the live one aside): 10 x 64 MiB bounds a pod's share of the
# volume; the monitoring job, run daily, reads them long before the oldest is deleted.
DEFAULT_REQUEST_LOG_MAX_FILES = 10
DEFAULT_REQUEST_LOG_FLUSH_S = 1.0
# Rows waiting for a stalled disk, past which rows are dropped: minutes of traffic at ~1 KiB a row.
DEFAULT_REQUEST_LOG_MAX_QUEUED_MB = 256.0
REQUEST_LOG_PREFIX = "requests"
logger = logging.getLogger(__name__)
_LOG_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def request_log_file(target: Path, host: str | None = None, pid: int | None = None) -> Path:
    """The file one server process appends to.

    A target ending in ``.jsonl`` is that file (one local server, e.g. ``mlops serve``). Any other
    target is a directory that replicas may share (a ReadWriteMany volume in the cluster): each
    process writes its own ``requests-<hostname>-<pid>.jsonl`` there, the hostname being the pod
    name and the pid telling apart the worker processes of one pod, so no two processes ever
    append to one file. The monitoring job reads every ``*.jsonl`` of the directory.
    """
    if target.suffix == ".jsonl":
        return target
    host = host or socket.gethostname()
    return target / f"{REQUEST_LOG_PREFIX}-{host}-{os.getpid() if pid is None else pid}.jsonl"


def rotated_name(path: Path, now: datetime | None = None) -> Path:
    """Where a full log file goes: ``<stem>-<UTC stamp>.jsonl`` beside it."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    return path.with_name(f"{path.stem}-{stamp}{path.suffix}")


def rotated_files(path: Path) -> list[Path]:
    """The files ``path`` was rotated to, oldest first.

    Matched on the exact stamp, not ``<stem>-*``: in a shared directory ``requests-pod-1`` is a
    prefix of another process's ``requests-pod-1-2``, whose files are not this one's to delete.
    """
    pattern = re.compile(re.escape(path.stem) + r"-\d{8}T\d{12}Z" + re.escape(path.suffix) + "$")
    return sorted(p for p in path.parent.glob(f"{path.stem}-*{path.suffix}")
                  if pattern.match(p.name))  # fmt: skip


class RequestLog:
    """Append-only JSON lines of served predictions, for the monitoring job.

    The request path only serialises its rows and queues the bytes; a background thread writes
    the queue to the file and flushes it every ``flush_s`` seconds, and :meth:`close` (the
    server's shutdown on SIGTERM) writes the rest. No disk write, flush or file lock is ever on
    the event loop: a disk that stalls (writeback under load) delays the log, not the answers.
    A file that grows past ``max_mb`` is renamed to ``<stem>-<UTC stamp>.jsonl`` and a new one
    started; past ``max_files`` rotated files the oldest is deleted. The monitoring job reads the
    rotated files too (``mlops.monitor.request_log_files``). Past ``max_queued_mb`` of rows
    waiting for a stalled disk, further rows are dropped and counted (``dropped_rows`` and the
    ``flight_delay_request_log_dropped_rows_total`` counter) rather than held without bound.

    Args:
        target: A ``.jsonl`` file, or a directory shared by replicas (see
            :func:`request_log_file`); ``None`` logs nothing.
        flush_s: Longest time written rows stay in the process's memory.
        max_mb: Size at which the file is rotated; ``0`` never rotates.
        max_files: Rotated files kept per process; ``0`` keeps every one.
        max_queued_mb: Bytes of rows that may wait for the writer thread.
    """

    def __init__(
        self,
        target: Path | None,
        flush_s: float = DEFAULT_REQUEST_LOG_FLUSH_S,
        max_mb: float = DEFAULT_REQUEST_LOG_MAX_MB,
        max_files: int = DEFAULT_REQUEST_LOG_MAX_FILES,
        max_queued_mb: float = DEFAULT_REQUEST_LOG_MAX_QUEUED_MB,
    ) -> None:
        if flush_s <= 0 or max_mb < 0 or max_files < 0 or max_queued_mb <= 0:
            raise ValueError(
                "request log: flush_s and max_queued_mb must be > 0, max_mb and max_files >= 0, "
                f"got flush_s={flush_s}, max_mb={max_mb}, max_files={max_files}, "
                f"max_queued_mb={max_queued_mb}"
            )
        self.target = target
        self.flush_s = flush_s
        self.max_bytes = int(max_mb * (1 << 20))
        self.max_files = max_files
        self.max_queued = int(max_queued_mb * (1 << 20))
        self.path: Path | None = None
        self.dropped_rows = 0
        # Held by whoever writes the file (the writer thread, close), never by the event loop.
        self._lock = threading.Lock()
        self._queue: deque[bytes] = deque()
        # Bytes queued (added to by the event loop only) and taken (by the writer only): two
        # single-writer counters, so no update is lost between the threads.
        self._queued_bytes = 0
        self._taken_bytes = 0
        self._file: Any = None
        self._size = 0
        self._pid = 0
        self._closed = threading.Event()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RequestLog:
        """The log the ``--request_log*`` flags ask for (see :func:`add_request_log_args`)."""
        return cls(
            args.request_log,
            flush_s=args.request_log_flush_s,
            max_mb=args.request_log_max_mb,
            max_files=args.request_log_max_files,
        )

    def _open(self) -> None:
        """Open this process's file; opened at the first write, so forked workers get their own."""
        assert self.target is not None
        with self._lock:
            self._pid = os.getpid()
            self._queue.clear()  # a forked worker's copy of its parent's queue is not its rows
            self._queued_bytes = self._taken_bytes = 0
            self.path = request_log_file(self.target, pid=self._pid)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab", buffering=1 << 16)
            self._size = self._file.tell()
        # Started here, not in __init__: a forked worker has no thread of its parent's. Each file
        # opened gets its own stop event, so a closed file's thread never outlives it.
        self._closed = closed = threading.Event()
        threading.Thread(
            target=self._write_every, args=(closed,), name="request-log-writer", daemon=True
        ).start()

    def _write_every(self, closed: threading.Event) -> None:
        while not closed.wait(self.flush_s):
            self._drain()

    def _drain(self) -> None:
        """Write the queued rows to the file (rotating it as it fills) and flush it."""
        with self._lock:
            if self._file is None or self._pid != os.getpid():
                return
            while self._queue:
                text = self._queue.popleft()
                self._taken_bytes += len(text)
                if self.max_bytes and self._size and self._size + len(text) > self.max_bytes:
                    self._rotate()
                self._file.write(text)
                self._size += len(text)
            self._file.flush()

    def _rotate(self) -> None:
        assert self.path is not None
        self._file.close()
        os.replace(self.path, rotated_name(self.path))
        self._file = self.path.open("ab", buffering=1 << 16)
        self._size = 0
        if self.max_files:
            for old in rotated_files(self.path)[: -self.max_files]:
                old.unlink(missing_ok=True)

    def write(self, records: list[dict[str, Any]]) -> None:
        """Queue one request's rows for the writer thread."""
        if self.target is None:
            return
        if self._file is None or self._pid != os.getpid():
            self._open()
        # orjson writes NaN as null and numpy scalars as numbers, as the monitoring job reads them.
        text = b"".join(orjson.dumps(r, option=_LOG_OPTIONS) + b"\n" for r in records)
        waiting = self._queued_bytes - self._taken_bytes
        if waiting + len(text) > self.max_queued:
            if not self.dropped_rows:
                logger.warning("request log: %d bytes wait for the disk; dropping rows", waiting)
            self.dropped_rows += len(records)
            M.REQUEST_LOG_DROPPED.labels().inc(len(records))
            return
        self._queued_bytes += len(text)
        self._queue.append(text)  # deque.append is atomic: no lock on the event loop

    def close(self) -> None:
        """Write the queued rows, flush and close the file (a later write opens it again)."""
        self._closed.set()
        self._drain()
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def add_request_log_args(p: argparse.ArgumentParser) -> None:
    """The request log's flags."""
    p.add_argument(
        "--request_log",
        type=Path,
        default=DEFAULT_REQUEST_LOG,
        help="JSON lines log of served predictions: a .jsonl file, or a directory shared by "
        "replicas (one requests-<hostname>-<pid>.jsonl per process). Default: no log.",
    )
    p.add_argument(
        "--request_log_max_mb",
        type=float,
        default=DEFAULT_REQUEST_LOG_MAX_MB,
        help="Rotate the log file to <stem>-<UTC stamp>.jsonl past this size (0: never).",
    )
    p.add_argument(
        "--request_log_max_files",
        type=int,
        default=DEFAULT_REQUEST_LOG_MAX_FILES,
        help="Rotated files kept per process; the oldest past it is deleted (0: keep all).",
    )
    p.add_argument(
        "--request_log_flush_s",
        type=float,
        default=DEFAULT_REQUEST_LOG_FLUSH_S,
        help="Longest time a logged row waits in memory before it is written to the file.",
    )


def _failure_kind(err: BaseException) -> str:
    """What failed in a predictor call, for the caller: the error's class, and an HTTP status."""
    status = getattr(getattr(err, "response", None), "status_code", None)
    return f"{type(err).__name__} (HTTP {status})" if status else type(err).__name__


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


@dataclass
class Pending:
    """A request between the transformer's stages."""

    request_id: str
    v2: bool
    started: float
    instances: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    missing_views: list[list[str]]
    inputs: Inputs | None = None
    scores: np.ndarray | None = None
    # The version that answered: a remote predictor reports its own (canary or stable).
    version: str | None = None


class FlightDelayTransformer(kserve.Model):
    """Flight request -> validated instance + Feast online features -> model -> score."""

    def __init__(
        self,
        name: str,
        online: OnlineFeatures,
        version: str,
        schema: ServingSchema,
        predictor: FlightDelayPredictor | None = None,
        predictor_config: PredictorConfig | None = None,
        missing_entity_policy: str = "impute",
        max_batch: int = DEFAULT_MAX_BATCH,
        request_log: RequestLog | None = None,
        decision_threshold: float = F.DECISION_THRESHOLD,
    ) -> None:
        super().__init__(name, predictor_config)
        if missing_entity_policy not in MISSING_POLICIES:
            raise ValueError(f"missing_entity_policy must be one of {MISSING_POLICIES}")
        self.online = online
        self.version = version
        self.schema = schema
        self.predictor = predictor
        self.missing_entity_policy = missing_entity_policy
        self.max_batch = max_batch
        self.request_log = request_log or RequestLog(None)
        self.decision_threshold = decision_threshold
        self.metrics = M.ModelMetrics(name, version)
        # The prediction moment is an optional V2 input too (a string tensor).
        self._v2_types = {
            **v2_input_types(self.get_input_types()),
            **dict.fromkeys(OPTIONAL_FIELDS, "BYTES"),
        }
        self._answered: dict[str, M.ModelMetrics] = {version: self.metrics}
        self.ready = False

    def load(self) -> bool:
        if self.predictor is not None and not self.predictor.ready:
            self.predictor.load()
        self.ready = True
        return self.ready

    async def healthy(self) -> bool:
        # The chart's readiness probe asks the transformer: while the embedded model's process
        # restarts, the pod must leave the Service's endpoints too.
        return self.ready and (self.predictor is None or await self.predictor.healthy())

    async def preprocess(
        self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None
    ) -> Pending:
        started = time.perf_counter()
        request_id = (headers or {}).get("x-request-id") or os.urandom(16).hex()
        v2 = isinstance(payload, InferRequest)
        try:
            if isinstance(payload, bytes | str):
                # KServe leaves a body it was not told is JSON (no content-type) undecoded.
                try:
                    payload = orjson.loads(payload)
                except orjson.JSONDecodeError as err:
                    raise RequestError("body", f"malformed JSON: {err}") from err
            if v2:
                assert isinstance(payload, InferRequest)  # v2 is decided by the payload's type
                cols = validate_v2_inputs(
                    payload.inputs, self._v2_types, self.max_batch, OPTIONAL_FIELDS
                )
                raw = v2_columns_to_instances(cols)
            elif isinstance(payload, dict) and "instances" in payload:
                raw = payload["instances"]
            else:
                raise RequestError("instances", 'the body must be {"instances": [...]}')
            instances = validate_instances(raw, self.schema, self.max_batch)
        except RequestError as err:
            raise InvalidInput(str(err)) from err

        t0 = time.perf_counter()
        # The prediction moment: the request's event_timestamp, else now (the staleness policy
        # of the real-time views is applied against it, see serving.online).
        wall = time.time()
        moments = [inst.get(F.EVENT_TIMESTAMP, wall) for inst in instances]
        lookups = await self.online.lookup(instances, moments)
        self.metrics.stage["feature_lookup"].observe(time.perf_counter() - t0)

        rows, missing = [], []
        newest: dict[str, float] = {}
        for i, (inst, found) in enumerate(zip(instances, lookups, strict=True)):
            for view in found.missing_views:
                self.metrics.missing(view).inc()
                if self.missing_entity_policy == "reject":
                    names = F.VIEW_KEYS[view]
                    raise InvalidInput(
                        f"instances[{i}].{'/'.join(names)}: "
                        f"{'/'.join(str(inst[n]) for n in names)!r} not found in the online "
                        f"store (feature view {view}); the missing-entity policy is 'reject'"
                    )
            for view, reason in found.stale_views.items():
                self.metrics.stale(view, reason).inc()
            for view, age in found.staleness_s.items():
                self.metrics.staleness(view).observe(max(0.0, age))
                if view in F.REALTIME_VIEWS and age >= 0:
                    newest[view] = min(age, newest.get(view, math.inf))
            rows.append({**inst, **found.features})
            missing.append(found.missing_views)
        for view, age in newest.items():
            self.metrics.freshness(view).set(age)
        return Pending(request_id, v2, started, instances, rows, missing)

    def validate(self, payload: Any) -> Any:
        """Pass ``Pending`` through: ``preprocess`` validated the request against the schema.

        KServe's own check (run between preprocess and predict) indexes the payload as a dict
        when the predictor protocol is V2, which a ``Pending`` is not.
        """
        return payload

    async def predict(self, payload: Pending, headers: dict[str, str] | None = None) -> Pending:
        t0 = time.perf_counter()
        payload.inputs = rows_to_inputs(payload.rows)
        try:
            if self.predictor is not None:
                scores = await self.predictor.score_batched(payload.inputs)
                payload.version = self.version
            else:
                scores, payload.version = await self._remote_predict(payload)
        except (InvalidInput, PredictError):
            raise
        except Exception as err:  # TF runtime or transport errors: a predict failure
            # The caller gets the failure's kind; its text (URLs, the client's objects) is logged.
            logger.warning("predictor failed: %s", err, exc_info=err)
            raise PredictError(f"predictor failed: {_failure_kind(err)}") from err
        if len(scores) != len(payload.rows):
            raise PredictError(f"predictor returned {len(scores)} scores for {len(payload.rows)}")
        payload.scores = scores
        self.metrics_of(payload.version).stage["predict"].observe(time.perf_counter() - t0)
        return payload

    def metrics_of(self, version: str | None) -> M.ModelMetrics:
        """The series of the version that answered.

        In the cluster one transformer fronts every predictor revision of a canary rollout, so
        per-slice predictions and latencies are labelled with the version the predictor
        reported; the rollout analysis compares those. Versions are few (stable and canary);
        past a bound, answers fall back to this transformer's own label.
        """
        if version is None:
            return self.metrics
        metrics = self._answered.get(version)
        if metrics is None:
            if len(self._answered) >= MAX_ANSWERED_VERSIONS:
                return self.metrics
            metrics = self._answered[version] = M.ModelMetrics(self.name, version)
        return metrics

    async def _remote_predict(self, payload: Pending) -> tuple[np.ndarray, str | None]:
        headers = {"x-request-id": payload.request_id}
        if self.protocol == "v2":
            assert payload.inputs is not None
            req = v2_request(payload.inputs, self.name, payload.request_id)
            resp = await super().predict(req, headers)
            scores = np.asarray(resp.outputs[0].as_numpy(), dtype=np.float64).reshape(-1)
            reported = resp.model_version or (resp.parameters or {}).get("model_version")
            return scores, None if reported is None else str(reported)
        rows = [
            {n: _json_value(r.get(n)) for n in F.FEATURE_NAMES} for r in payload.rows
        ]  # fmt: skip
        resp = await super().predict({"instances": rows}, headers)
        version = resp.get("model_version")
        return np.asarray(resp["predictions"], dtype=np.float64), (
            None if version is None else str(version)
        )

    async def postprocess(
        self, result: Pending, headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferResponse:
        scores = result.scores if result.scores is not None else np.array([])
        now = time.time()
        records = []
        version = result.version or self.version
        metrics, threshold = self.metrics_of(result.version), self.decision_threshold
        for i, (inst, score) in enumerate(zip(result.instances, scores, strict=True)):
            s = float(score)
            outcome = M.outcome(s, threshold)
            for key, value in M.slice_labels(inst):
                metrics.score(key, value).observe(s)
                metrics.prediction(key, value, outcome).inc()
            records.append(
                {
                    "ts": now,
                    "request_id": result.request_id,
                    "row": i,
                    "model": self.name,
                    "model_version": version,
                    F.TAILNUM: inst[F.TAILNUM],
                    "features": result.rows[i],
                    "missing_views": result.missing_views[i],
                    "score": s,
                }
            )
        self.request_log.write(records)
        metrics.stage["total"].observe(time.perf_counter() - result.started)
        if result.v2:
            out = InferOutput(SCORE, [len(scores)], "FP32", data=[float(s) for s in scores])
            return InferResponse(
                response_id=result.request_id,
                model_name=self.name,
                infer_outputs=[out],
                model_version=version,
            )
        return {
            "predictions": [float(s) for s in scores],
            "model_version": version,
            "request_id": result.request_id,
        }

    def get_input_types(self) -> list[dict[str, Any]]:
        return [
            {"name": n, "datatype": "FP32" if n in F.NUMERIC_FEATURES else "BYTES", "shape": [-1]}
            for n in F.REQUEST_FIELDS
        ]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [{"name": SCORE, "datatype": "FP32", "shape": [-1]}]


def add_online_feature_args(p: argparse.ArgumentParser) -> None:
    """Flags of the online feature lookup: the Feast source, its cache and missing entities."""
    p.add_argument("--feast_repo", type=Path, default=None, help="Feast repository (SDK reads).")
    p.add_argument("--feast_server_url", default=None, help="Feast feature server base URL.")
    p.add_argument(
        "--feature_timeout_ms",
        type=float,
        default=200.0,
        help="Deadline of one online feature lookup.",
    )
    p.add_argument(
        "--feature_cache_ttl_s",
        type=float,
        default=30.0,
        help="Serve an entity's cached online row this long without a read; 0 disables the "
        "cache (every row is read per request).",
    )
    p.add_argument(
        "--feature_max_stale_s",
        type=float,
        default=300.0,
        help="Serve a cached row up to this old while it is refreshed in the background.",
    )
    p.add_argument(
        "--realtime_cache_ttl_s",
        type=float,
        default=1.0,
        help="Serve a real-time view's cached row this long without a read; 0 reads the "
        "real-time views on every request.",
    )
    p.add_argument(
        "--realtime_max_stale_s",
        type=float,
        default=5.0,
        help="Serve a real-time view's cached row up to this old while it is refreshed in the "
        "background (bounds how late a pushed row reaches requests).",
    )
    p.add_argument(
        "--no_feature_warmup",
        dest="feature_warmup",
        action="store_false",
        help="Do not load the known entities' online rows at start-up (SDK source only).",
    )
    p.add_argument(
        "--missing_entity_policy",
        choices=MISSING_POLICIES,
        default="impute",
        help="impute: absent entity's features are missing values (as in the "
        "training join); reject: answer 400 naming the entity key.",
    )


def build_parser() -> argparse.ArgumentParser:
    """The KServe model server's flags plus the transformer's."""
    p = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    p.add_argument("--host", default="127.0.0.1", help="Address to bind the HTTP server.")
    p.add_argument(
        "--model_dir", default=None, help="Embedded mode: the SavedModel to run in this process."
    )
    p.add_argument("--model_version", default=None, help="Version label (default: from dir).")
    p.add_argument(
        "--second_model_dir",
        default=None,
        help="Embedded mode: a second version served side by side.",
    )
    p.add_argument(
        "--second_model_name",
        default=None,
        help=f"Name of the second version (default: <model_name>{CANDIDATE_SUFFIX}).",
    )
    add_online_feature_args(p)
    p.add_argument("--max_batch_size", type=int, default=DEFAULT_MAX_BATCH)
    p.add_argument(
        "--schema",
        type=Path,
        default=None,
        help="TFDV schema.pbtxt for validation (default: the one packaged with mlops).",
    )
    add_request_log_args(p)
    p.add_argument("--decision_threshold", type=float, default=F.DECISION_THRESHOLD)
    add_model_runtime_args(p)
    add_server_args(p)
    return p  # fmt: skip


def online_features(args: argparse.Namespace) -> OnlineFeatures:
    """The online feature lookup the flags ask for, its cache registered and warmed up."""
    if args.feast_server_url:
        source: Any = FeastHttpSource(args.feast_server_url, args.feature_timeout_ms / 1000)
    elif args.feast_repo:
        source = FeastSdkSource(args.feast_repo)
    else:
        raise SystemExit("one of --feast_repo or --feast_server_url is required")
    online = OnlineFeatures(
        source,
        timeout_s=args.feature_timeout_ms / 1000,
        fresh_s=args.feature_cache_ttl_s,
        max_stale_s=max(args.feature_max_stale_s, args.feature_cache_ttl_s),
        realtime_fresh_s=args.realtime_cache_ttl_s,
        realtime_max_stale_s=max(args.realtime_max_stale_s, args.realtime_cache_ttl_s),
    )
    M.FEATURE_CACHE.caches.append(online)
    if args.feature_warmup and online.caching and isinstance(source, FeastSdkSource):
        started = time.perf_counter()
        loaded = online.preload(source.read_sync, entity_keys_of_repo(source.store))
        logger.info("feature cache warm-up: %d rows in %.1f s", loaded,
                    time.perf_counter() - started)  # fmt: skip
    return online


def build_models(args: argparse.Namespace) -> list[kserve.Model]:
    """The models one server process registers, from parsed flags (loaded and ready)."""
    online = online_features(args)
    schema = load_schema(args.schema)
    log = RequestLog.from_args(args)
    common = dict(
        online=online,
        schema=schema,
        missing_entity_policy=args.missing_entity_policy,
        max_batch=args.max_batch_size,
        request_log=log,
        decision_threshold=args.decision_threshold,
    )
    models: list[kserve.Model] = []
    if args.model_dir is None:
        if not args.predictor_host:
            raise SystemExit("one of --model_dir (embedded) or --predictor_host is required")
        config = PredictorConfig(args.predictor_host, args.predictor_protocol,
                                 predictor_request_timeout_seconds=args.
                                 predictor_request_timeout_seconds)  # fmt: skip
        version = args.model_version or "remote"
        models.append(FlightDelayTransformer(args.model_name, version=version,
                                             predictor_config=config, **common))  # fmt: skip
    else:
        pairs = [(args.model_name, args.model_dir, args.model_version)]
        if args.second_model_dir:
            name2 = args.second_model_name or f"{args.model_name}{CANDIDATE_SUFFIX}"
            pairs.append((name2, args.second_model_dir, None))
        for name, model_dir, version in pairs:
            predictor = FlightDelayPredictor(f"{name}-predictor", model_dir, version,
                                             **model_runtime_kwargs(args))  # fmt: skip
            predictor.load()
            models.append(predictor)
            models.append(FlightDelayTransformer(name, version=predictor.version,
                                                 predictor=predictor, **common))  # fmt: skip
    for m in models:
        if not m.ready:
            m.load()
    return models


def main(argv: list[str] | None = None) -> int:
    """Serve the transformer (embedded predictor or remote) until SIGTERM."""
    from serving.server import serve

    args = build_parser().parse_args(argv)
    models = build_models(args)
    try:
        serve(models, http_port=args.http_port, host=args.host, workers=args.workers,
              grpc_port=args.grpc_port, max_request_bytes=args.max_request_bytes)  # fmt: skip
    finally:
        for m in models:
            if isinstance(m, FlightDelayTransformer):
                m.request_log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
