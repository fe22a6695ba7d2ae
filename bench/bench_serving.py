"""Benchmark of online serving: wrk on loopback against the KServe transformer + predictor.

Figures (each wrk run ~10 s after a 1 s warm-up, 8 connections, 1 server worker): throughput and
p50/p99 latency of single-row V1 requests through the embedded transformer + predictor (the
default ``make serve`` topology: one server process with the Feast SDK and its entity cache, the
SavedModel in a model process), and the same for a trivial KServe model served by the same server
class twice: through KServe's FastAPI route (``trivial``: KServe's own cost, the baseline of issue
#15's target and of every earlier run) and through the server's V1 fast path as the real model is
(``trivial_fast``: the serving stack's floor). The three are measured ``ROUNDS`` times,
alternating, and each figure is the median over the rounds; a ratio is the median of the
per-round ratios (the machine is shared and noisy). Also:
the two-process topology (transformer -> predictor over HTTP), the path without the entity cache,
and batched throughput in rows/s. Request bodies are real flights of the last day of the data
(whose entities the materialized online store holds), cycled by a Lua script so the tail numbers
vary.

The model served is ``BENCH_MODEL_DIR`` if set, else the local registry's production version
(``make run`` trains one: the wide-and-deep model with its TFT layer), else a small logistic
fixture model; ``served_model`` names which.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from mlops import features as F
from mlops.shadow import free_port

ROOT = Path(__file__).resolve().parents[1]
REPO = ROOT / "feature_repo"
CONNECTIONS = 8
DURATION_S = 10
BATCH_ROWS = 64
ROUNDS = 3

LUA = """
bodies = {}
local f = io.open("%(bodies)s", "r")
for line in f:lines() do bodies[#bodies + 1] = line end
f:close()
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
"""


def ensure_wrk() -> str:
    """Path of wrk, installing the Debian package if it is missing."""
    path = shutil.which("wrk")
    if path is None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env)
        path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not installed")
    return path


def wait_ready(
    port: int, model: str, proc: subprocess.Popen[bytes], timeout_s: float = 120
) -> None:
    """Wait until ``model`` answers ready on ``port`` (or the process dies)."""
    deadline = time.monotonic() + timeout_s
    url = f"http://127.0.0.1:{port}/v2/models/{model}/ready"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {timeout_s} s")


@contextmanager
def server(args: list[str], port: int, model: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``python -m <args>`` on loopback, wait for ``model``, terminate on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", *args, f"--http_port={port}"], cwd=ROOT, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            try:
                wait_ready(port, model, proc)
            except (RuntimeError, TimeoutError) as err:
                tail = log.read_text(errors="replace").splitlines()[-15:]
                raise RuntimeError(f"{' '.join(args)}: {err}; log:\n" + "\n".join(tail)) from err
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def wrk(url: str, bodies: list[str], tmp: Path, duration_s: int = DURATION_S) -> dict[str, float]:
    """Run wrk with POST bodies cycled by Lua; return requests/s, p50/p99 ms and non-2xx count."""
    body_file = tmp / f"bodies-{len(bodies)}-{abs(hash(bodies[0]))}.txt"
    body_file.write_text("\n".join(bodies) + "\n")
    script = tmp / "post.lua"
    script.write_text(LUA % {"bodies": body_file})
    # One warm-up second first: TF's first calls and the entity cache are not the steady state.
    for secs in (1, duration_s):
        proc = subprocess.run(
            [ensure_wrk(), "-t2", f"-c{CONNECTIONS}", f"-d{secs}s", "--latency", "-s",
             str(script), url],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    out = proc.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "non_2xx": float(bad.group(1)) if bad else 0}


def request_bodies(n_rows: int, n_bodies: int = 200) -> list[str]:
    """V1 bodies of ``n_rows`` real flights each, from the last day of the data."""
    flights = pd.read_parquet(REPO / "data" / "flights.parquet").tail(n_rows * n_bodies)
    fields = F.REQUEST_FIELDS
    rows = [
        {
            k: (float(v) if k in F.NUMERIC_FEATURES else str(v))
            for k, v in zip(fields, vals, strict=True)
        }
        for vals in flights[list(fields)].itertuples(index=False)
    ]
    rows = [r for r in rows if r[F.TAILNUM] != F.MISSING_CATEGORY]
    return [
        json.dumps({"instances": rows[i : i + n_rows]})
        for i in range(0, len(rows) - n_rows + 1, n_rows)
    ][:n_bodies]


def served_model(path: Path) -> tuple[Path, str]:
    """The model to serve and its description (see the module docstring)."""
    if os.environ.get("BENCH_MODEL_DIR"):
        path = Path(os.environ["BENCH_MODEL_DIR"])
        return path, f"BENCH_MODEL_DIR {path}"
    from mlops.registry import DEFAULT_MODEL_NAME, PRODUCTION, ModelRegistry, RegistryError

    try:
        version = ModelRegistry(str(ROOT / "registry")).resolve(DEFAULT_MODEL_NAME, PRODUCTION)
        described = f"registry {DEFAULT_MODEL_NAME} version {version.version} ({PRODUCTION})"
        return version.local_model_path, described
    except (RegistryError, FileNotFoundError, KeyError):
        pass
    sys.path.insert(0, str(ROOT))
    from tests.model_fixtures import export_logistic_model

    return export_logistic_model(path), "logistic fixture (no production model in ./registry)"


def run() -> dict[str, float | str]:
    """Measure the serving figures; see the module docstring."""
    figures: dict[str, float | str] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model_dir, figures["served_model"] = served_model(tmp / "model")
        single, batched = request_bodies(1), request_bodies(BATCH_ROWS, 20)

        def put(prefix: str, res: dict[str, float]) -> None:
            for key, value in res.items():
                figures[f"{prefix}_{key}"] = round(value, 2)

        trivial = ["bench.trivial", "--model_name=trivial", "--kserve_routes"]
        trivial_fast = ["bench.trivial", "--model_name=trivial"]
        trivial_url = "http://127.0.0.1:{}/v1/models/trivial:predict"
        base = ["serving.transformer", "--model_name=flight-delay", f"--feast_repo={REPO}",
                f"--request_log={tmp / 'requests.jsonl'}"]  # fmt: skip
        url = "http://127.0.0.1:{}/v1/models/flight-delay:predict"
        rounds: dict[str, list[dict[str, float]]] = {
            "trivial_single": [], "trivial_fast_single": [], "embedded_single": []
        }  # fmt: skip
        for _ in range(ROUNDS):
            for name, args in (("trivial_single", trivial), ("trivial_fast_single", trivial_fast)):
                port = free_port()
                with server(args, port, "trivial", tmp / "t.log"):
                    rounds[name].append(wrk(trivial_url.format(port), single, tmp))
            port = free_port()
            with server([*base, f"--model_dir={model_dir}"], port, "flight-delay", tmp / "e.log"):
                rounds["embedded_single"].append(wrk(url.format(port), single, tmp))
                if len(rounds["embedded_single"]) == ROUNDS:
                    batch = wrk(url.format(port), batched, tmp)
                    put(f"embedded_batch{BATCH_ROWS}", batch)
                    figures[f"embedded_batch{BATCH_ROWS}_rows_per_s"] = round(
                        batch["rps"] * BATCH_ROWS, 1
                    )
        for prefix, runs in rounds.items():
            put(prefix, {k: statistics.median(r[k] for r in runs) for k in runs[0]})
            figures[f"{prefix}_rps_rounds"] = str([round(r["rps"]) for r in runs])
        for baseline, suffix in (("trivial_single", ""), ("trivial_fast_single", "_fast")):
            pairs = zip(rounds["embedded_single"], rounds[baseline], strict=True)
            ratio = statistics.median(e["rps"] / t["rps"] for e, t in pairs)
            figures[f"embedded_single_ratio_vs_trivial{suffix}"] = round(ratio, 3)

        port = free_port()
        uncached = [*base, f"--model_dir={model_dir}", "--feature_cache_ttl_s=0"]
        with server(uncached, port, "flight-delay", tmp / "u.log"):  # every row read per request
            put("embedded_nocache_single", wrk(url.format(port), single, tmp))

        pport, port = free_port(), free_port()
        predictor = ["serving.predictor", "--model_name=flight-delay", f"--model_dir={model_dir}"]
        with server(predictor, pport, "flight-delay", tmp / "p.log"):
            remote = [*base, f"--predictor_host=127.0.0.1:{pport}"]
            with server(remote, port, "flight-delay", tmp / "r.log"):
                put("two_process_single", wrk(url.format(port), single, tmp))

    base_rps = float(figures["trivial_single_rps"])
    for prefix in ("embedded_nocache_single", "two_process_single"):
        figures[f"{prefix}_ratio_vs_trivial"] = round(float(figures[f"{prefix}_rps"]) / base_rps, 3)
    figures["connections"] = CONNECTIONS
    figures["rounds"] = ROUNDS
    figures["target"] = (
        "embedded_single_ratio_vs_trivial (KServe's route) >= 0.8 (issue #15) and p99 < 20 ms"
    )
    return figures


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
