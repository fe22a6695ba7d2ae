"""Local rollout in shadow mode: stable and candidate served side by side on the same traffic.

Starts the real KServe model server on 127.0.0.1 with the ``production`` version as
``<model>`` and the candidate as ``<model>-candidate`` (one process, both models), and a real
Prometheus scraping it. Held-out flights are replayed to both, each at its moment (its scheduled
departure), with the real-time feature rows up to that moment pushed into the online store
first; the rollout analysis of :mod:`mlops.rollout` then reads the same series it reads for a
cluster canary, and the decision is recorded in the registry (``production`` moves only on
promote). Missing evidence (a series absent, too few requests, Prometheus failing) is a hold: the
replay is one-off, so a held candidate stays where it is and ``production`` does not move.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from mlops import features as F
from mlops import telemetry as T
from mlops.registry import CANDIDATE_SUFFIX, PRODUCTION
from mlops.rollout import (
    PrometheusClient,
    RolloutAnalysis,
    RolloutThresholds,
    analyze,
    record_decision,
    selector,
)

WARMUP = 5
# Flights replayed to each version: enough that a slice at the gating share holds ~15 requests.
DEFAULT_REPLAY_REQUESTS = 300


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    """Wait until ``url`` answers 200, failing early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} before {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {timeout:.0f}s")


@contextmanager
def server_process(cmd: list[str], ready_url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A server process, yielded once ``ready_url`` answers, stopped (then killed) on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
        try:
            wait_ready(ready_url, proc)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def serving_pair(
    model_name: str,
    stable_dir: Path,
    candidate_dir: Path,
    feature_repo: Path,
    work: Path,
    request_log: Path | None = None,
) -> Iterator[str]:
    """The model server with both versions; yields its base URL."""
    if request_log is not None:
        request_log.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [
        sys.executable, "-m", "serving.transformer", f"--model_name={model_name}",
        f"--model_dir={stable_dir}", f"--second_model_dir={candidate_dir}",
        f"--second_model_name={model_name}{CANDIDATE_SUFFIX}", f"--feast_repo={feature_repo}",
        f"--http_port={port}", f"--request_log={request_log or work / 'requests.jsonl'}",
        # The replay moves through hours of moments in seconds: read real-time rows uncached,
        # so each request gets the rows of its own moment, not the previous request's.
        "--realtime_cache_ttl_s=0", "--realtime_max_stale_s=0",
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    ready = f"{base}/v2/models/{model_name}{CANDIDATE_SUFFIX}/ready"
    with server_process(cmd, ready, work / "server.log"):
        yield base


# Why a local shadow analysis cannot run, and the one step that fixes it.
PROMETHEUS_MISSING = (
    "prometheus not installed (not on PATH); run `make prometheus` or "
    "`bash tools/install-prometheus.sh`"
)


def prometheus_available() -> bool:
    """Whether a ``prometheus`` binary is on PATH (the shadow analysis needs one)."""
    return shutil.which("prometheus") is not None


@contextmanager
def prometheus(
    target: str | list[str] | dict[str, list[str]], work: Path, rule_files: Sequence[Path] = ()
) -> Iterator[PrometheusClient]:
    """A real Prometheus scraping every second and evaluating ``rule_files``.

    Args:
        target: ``host:port``, several, or scrape targets by job name.
        work: Folder for its config and data.
        rule_files: Alerting/recording rule files to load.
    """
    if not prometheus_available():
        raise FileNotFoundError(PROMETHEUS_MISSING)
    port = free_port()
    if isinstance(target, str):
        target = [target]
    jobs = target if isinstance(target, dict) else {"serving": target}
    config = work / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(r) for r in rule_files],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}
                           for job, targets in jobs.items()],
    }))  # fmt: skip
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
         f"--storage.tsdb.path={work / 'tsdb'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}/-/ready", proc, timeout=30)
        yield PrometheusClient(f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def replay_rows(flights: pd.DataFrame, limit: int) -> list[dict[str, Any]]:
    """Request instances of held-out flights: request features, tail number and the moment.

    The moment (``event_timestamp``, the scheduled departure) lets the server judge the real-time
    features as of that flight's prediction time, as it would have served them live.
    """
    rows = []
    chosen = flights.head(limit)
    if F.EVENT_TIMESTAMP in chosen:
        # Traffic arrives in time order, and the feed can only move forward.
        chosen = chosen.sort_values(F.EVENT_TIMESTAMP, kind="stable")
    for rec in chosen.to_dict(orient="records"):
        inst = {n: rec[n] for n in F.REQUEST_FIELDS}
        row: dict[str, Any] = {
            k: (float(v) if k in F.NUMERIC_FEATURES else str(v)) for k, v in inst.items()
        }
        if F.EVENT_TIMESTAMP in rec:
            row[F.EVENT_TIMESTAMP] = pd.Timestamp(rec[F.EVENT_TIMESTAMP]).isoformat()
        rows.append(row)
    return rows


def _feed_for(feature_repo: Path, rows: list[dict[str, Any]]) -> Any:
    """The real-time feed of the replay's time span, or None when the rows carry no moment.

    It pushes into the repository's online store (the one the shadow server reads) every
    real-time row up to each request's moment just before the request: the replay sees the
    real-time features as a live feed would have served them at that moment.
    """
    from mlops.feast_ops import RealtimeFeed

    moments = [pd.Timestamp(r[F.EVENT_TIMESTAMP]) for r in rows if F.EVENT_TIMESTAMP in r]
    if not moments:
        return None
    # Rows older than the staleness bound before the first moment would be served as missing.
    start = min(moments) - pd.Timedelta(minutes=F.REALTIME_MAX_AGE_MINUTES)
    return RealtimeFeed.of_range(feature_repo, start, max(moments))


def post(url: str, body: dict[str, Any]) -> int:
    """POST JSON; return the HTTP status (errors are traffic too)."""
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def _wait_for_count(
    prom: PrometheusClient, models: tuple[str, ...], count: int, timeout_s: float = 60.0
) -> None:
    """Wait until Prometheus has scraped at least ``count`` requests of each of ``models``."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = [prom.scalar(f'sum({T.REQUESTS}{{model="{m}"}})') for m in models]
        if all(not math.isnan(v) and v >= count for v in seen):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"Prometheus saw {seen} requests of {models}, expected {count}")
        time.sleep(0.25)


def shadow_rollout(
    registry: Any,
    model_name: str,
    candidate_version: int,
    feature_repo: Path,
    replay: pd.DataFrame,
    thresholds: RolloutThresholds | None = None,
    requests: int = DEFAULT_REPLAY_REQUESTS,
    request_log: Path | None = None,
) -> RolloutAnalysis:
    """Serve production and candidate side by side, replay traffic, analyse, record.

    Args:
        registry: The model registry (``mlops.registry.ModelRegistry``).
        model_name: Registered model name.
        candidate_version: The version to roll out.
        feature_repo: The Feast repository the server reads online features from.
        replay: Held-out flights to replay (entity/label table columns).
        thresholds: Rollout thresholds; defaults suited to a short replay.
        requests: Flights to replay to each version (bounded).
        request_log: Where the server appends the replayed requests (the local loop's served
            traffic, which ``mlops monitor`` reads); a temporary file by default.
    """
    stable = registry.find(model_name, PRODUCTION)
    if stable is None:
        raise ValueError(f"{model_name} has no production version to compare with")
    candidate = registry.get(model_name, candidate_version)
    # Both versions see the same replay, so a slice at the gating share (5 %) of `requests`
    # flights holds about requests / 20 predictions in each; a third less leaves room for
    # increase()'s extrapolation over a short series.
    th = thresholds or RolloutThresholds(
        window="5m",
        min_requests=max(1, min(200, requests // 2)),
        min_slice_requests=max(1, min(20, requests // 30)),
    )
    registry.record_event(model_name, candidate_version, "shadow_started",
                          {"stable_version": stable.version, "requests": requests})  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="shadow-") as tmp:
        work = Path(tmp)
        pair = serving_pair(
            model_name,
            stable.local_model_path,
            candidate.local_model_path,
            feature_repo,
            work,
            request_log,
        )
        with pair as base, prometheus(base.removeprefix("http://"), work) as prom:
            rows = replay_rows(replay, requests + WARMUP)
            feed = _feed_for(feature_repo, rows)
            urls = [
                f"{base}/v1/models/{n}:predict" for n in (model_name, model_name + CANDIDATE_SUFFIX)
            ]
            # Counters appear at their first request; a few requests, then wait until
            # Prometheus has scraped them (its first scrape comes seconds after it starts), so the
            # windowed increase() over the replay starts from a sample, not from nothing.
            names = (model_name, model_name + CANDIDATE_SUFFIX)
            for i, inst in enumerate(rows):
                if feed is not None:
                    feed.advance(pd.Timestamp(inst[F.EVENT_TIMESTAMP]))
                for url in urls:
                    post(url, {"instances": [inst]})
                if i == WARMUP - 1:
                    _wait_for_count(prom, names, WARMUP)
            _wait_for_count(prom, names, len(rows))
            time.sleep(2)  # two more scrapes after the last request
            analysis = analyze(
                prom,
                selector(f"{model_name}{CANDIDATE_SUFFIX}", str(candidate.version)),
                selector(model_name, str(stable.version)),
                th,
            )
    record_decision(registry, model_name, candidate_version, analysis)
    return analysis
