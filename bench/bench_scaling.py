"""How each pipeline step's time and peak memory grow with the data: 1, 3 and 12 months of 2013
and a synthetic 10x year (``bench.synthetic``: 2013 repeated as ten 52-week years).

One ``kfp.local`` run per window, each step its own process, throwaway registry. Each window runs
in a child process of its own session, so a window past ``WINDOW_TIMEOUT_S`` or a step past the
memory cap is stopped whole (its steps' processes too) and recorded as failed, with each step's
peak until then; a failed window's figures are its failure, never an older run's numbers.

Peak memory per step: ``kfp.local`` starts each step as ``sh -ec ... executor_main
--function_to_execute <step>`` and waits for it, so ``getrusage(RUSAGE_CHILDREN)`` only gives the
largest step so far. A thread here reads ``/proc`` instead (every ``POLL_S``): each process whose
command line names a step, or descends from one, counts for that step. A step's figure is the
larger of its largest process's ``VmHWM`` (the kernel's own peak, exact) and the largest sum of
``VmRSS`` over its processes seen at one poll (for steps that start helpers). Linux only.

Growth: ``<step>_exponent_12m_10x`` is log(time ratio) / log(row ratio) between the two largest
windows, where fixed costs (process start, imports, graph building) weigh least: 1 is linear,
below 1 means fixed cost still dominates, above ~1.15 is worse than linear.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.bench_vs_tfx import REPO

# (label, synthetic 10x data or the real feature repo, first span, last span)
WINDOWS: tuple[tuple[str, bool, str, str], ...] = (
    ("1m", False, "2013-01", "2013-01"),
    ("3m", False, "2013-01", "2013-03"),
    ("12m", False, "2013-01", "2013-12"),
    ("10x", True, "2013-01", "2022-12"),
)
# The synthetic years fail the span checks calibrated on 2013 (their verdict is recorded): the
# gate lets the run go on so every step is timed; push then registers nothing, as designed.
SYNTHETIC_ARGS = {"stop_on_invalid_data": False}
WINDOW_TIMEOUT_S = 1200  # the issue: stop a window past ~20 min, record it as failed
# Stop a window whose step grows past this, or when the machine's available memory falls under
# MEMORY_FLOOR_MIB: the machine is shared and has no swap, so the kernel's OOM killer could
# otherwise pick another user's process.
MEMORY_CAP_MIB = 14 * 1024
MEMORY_FLOOR_MIB = 1024
POLL_S = 0.25
SUPERLINEAR = 1.15  # exponent above which a step is flagged as growing worse than linearly
_FLAG = "--function_to_execute"
_KIB = 1024


def _status_kib(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    out[line.split(":")[0]] = int(line.split()[1])
    except OSError:  # the process ended between the listing and the read
        pass
    return out


def _available_mib() -> float:
    """The machine's available memory (``MemAvailable``), MiB."""
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / _KIB
    return float("inf")


def _processes() -> dict[int, tuple[int, str | None]]:
    """Every process: pid -> (parent pid, the step its command line names or None)."""
    procs: dict[int, tuple[int, str | None]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                # The command name may hold spaces and parentheses: the fields follow the last ")".
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                args = fh.read().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        step = None
        if _FLAG.encode() in args:
            i = args.index(_FLAG.encode())
            step = args[i + 1].decode().replace("_", "-") if i + 1 < len(args) else None
        procs[int(entry)] = (ppid, step)
    return procs


class StepMemory:
    """Peak memory (MiB) of each pipeline step among the descendants of ``root``, from /proc."""

    def __init__(self, root: int | None = None, poll_s: float = POLL_S) -> None:
        self.root = root or os.getpid()
        self.poll_s = poll_s
        self.peak_kib: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _step_of(self, pid: int, procs: dict[int, tuple[int, str | None]]) -> str | None:
        """The step of ``pid`` (itself or its nearest ancestor naming one) if it descends from
        ``root``."""
        step, seen = None, 0
        while pid in procs and seen < 64:
            if pid == self.root:
                return step
            parent, named = procs[pid]
            step = step or named
            pid, seen = parent, seen + 1
        return None

    def sample(self) -> None:
        """One poll: update each step's peak."""
        procs = _processes()
        tree: dict[str, int] = {}
        for pid in procs:
            step = self._step_of(pid, procs)
            if step is None:
                continue
            status = _status_kib(pid)
            tree[step] = tree.get(step, 0) + status.get("VmRSS", 0)
            self.peak_kib[step] = max(self.peak_kib.get(step, 0), status.get("VmHWM", 0))
        for step, kib in tree.items():
            self.peak_kib[step] = max(self.peak_kib[step], kib)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.sample()

    def __enter__(self) -> StepMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def mib(self) -> dict[str, float]:
        """Peak MiB per step seen so far."""
        # A copy first: the polling thread may add a step meanwhile.
        return {step: round(kib / _KIB, 1) for step, kib in list(self.peak_kib.items())}


def run_window(
    work: Path, repo: Path, first: str, last: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One pipeline run on a window (in this process); its status, step seconds and rows."""
    from mlops.registry import code_revision_label
    from mlops.runner import run_local

    summary = run_local(work / "runs", {
        "feature_repo": str(repo), "first_span": first, "last_span": last,
        "registry_uri": str(work / "registry"), "code_revision": code_revision_label(),
        **(extra or {}),
    }, "bench-scaling")  # fmt: skip
    rows = 0
    for step in summary.steps:
        if step.name == "ingest-op":
            rows = sum(int(o.get("metadata", {}).get("rows", 0)) for o in step.outputs.values())
    return {
        "status": summary.status,
        "failed_step": summary.failed_step,
        "steps": {s.name: s.seconds for s in summary.steps},
        "rows": rows,
        "validation": str(summary.decisions.get("validation", "not run")),
    }


def _window_in_child(
    work: Path, repo: Path, first: str, last: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``run_window`` in a child process of its own session, stopped whole past the timeout or
    the memory cap; peak memory per step measured from here."""
    out = work / "window.json"
    config = {"repo": str(repo), "first": first, "last": last, "work": str(work),
              "out": str(out), "extra": extra or {}}  # fmt: skip
    cmd = [sys.executable, "-m", "bench.bench_scaling", "--window", json.dumps(config)]
    t0 = time.perf_counter()
    stopped = ""
    stderr = work / "window.stderr"
    with StepMemory() as memory, stderr.open("w") as err_file:
        # To a file, not a pipe: nothing reads it while the window runs.
        proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=err_file)  # fmt: skip
        while proc.poll() is None and not stopped:
            time.sleep(1.0)
            over = {s: m for s, m in memory.mib().items() if m > MEMORY_CAP_MIB}
            if over:
                stopped = f"STOPPED: {over} MiB over the cap of {MEMORY_CAP_MIB} MiB"
            elif (left := _available_mib()) < MEMORY_FLOOR_MIB:
                stopped = f"STOPPED: {left:.0f} MiB left on the machine; steps {memory.mib()}"
            elif time.perf_counter() - t0 > WINDOW_TIMEOUT_S:
                stopped = f"TIMEOUT after {WINDOW_TIMEOUT_S} s"
        if stopped:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    err = stderr.read_text()
    if stopped:
        result: dict[str, Any] = {"status": stopped}
    elif proc.returncode == 0 and out.is_file():
        result = json.loads(out.read_text())
    else:
        result = {"status": f"FAILURE (exit {proc.returncode}): {err[-500:]}"}
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    result["peak_mib"] = memory.mib()
    return result


def growth(per: dict[str, dict[str, Any]]) -> dict[str, float | str]:
    """Flat figures: per window and step, seconds and peak MiB; per step, the growth exponent
    between the two largest windows that succeeded."""
    figures: dict[str, float | str] = {}
    ok = [w for w, r in per.items() if r.get("status") == "SUCCESS"]
    for label, r in per.items():
        figures[f"window_{label}_status"] = r["status"]
        figures[f"window_{label}_wall_s"] = r["wall_s"]
        if "validation" in r:
            figures[f"window_{label}_validation"] = r["validation"]
        if label not in ok:
            # Peaks up to the stop still say which step ran out of room.
            for step, mib in r.get("peak_mib", {}).items():
                figures[f"{step}_{label}_peak_mib_until_stopped"] = mib
            continue  # a failed window's step figures would be partial: only its failure
        figures[f"window_{label}_rows"] = r["rows"]
        for step, seconds in r["steps"].items():
            figures[f"{step}_{label}_s"] = round(seconds or 0.0, 1)
            figures[f"{step}_{label}_peak_mib"] = r["peak_mib"].get(step, 0.0)
    if len(ok) >= 2:
        small, big = per[ok[-2]], per[ok[-1]]
        row_ratio = big["rows"] / small["rows"] if small["rows"] else 0.0
        for step, seconds in big["steps"].items():
            before = small["steps"].get(step) or 0.0
            key = f"{step}_exponent_{ok[-2]}_{ok[-1]}"
            if seconds and before and row_ratio > 1:
                figures[key] = round(math.log(seconds / before) / math.log(row_ratio), 2)
            else:
                figures[key] = "n/a"
    return figures


def run() -> dict[str, float | str]:
    """Every window, smallest first; the synthetic repository is built in a temporary folder."""
    per: dict[str, dict[str, Any]] = {}
    loads = [f"{os.getloadavg()[0]:.1f}"]
    build_s: float | None = None
    with tempfile.TemporaryDirectory() as tmp:
        for label, synthetic, first, last in WINDOWS:
            repo = REPO
            if synthetic:
                from bench.synthetic import synthetic_repo

                repo = Path(tmp) / "synthetic_repo"
                t0 = time.perf_counter()
                synthetic_repo(repo)
                build_s = round(time.perf_counter() - t0, 1)
            work = Path(tmp) / label
            work.mkdir()
            extra = SYNTHETIC_ARGS if synthetic else None
            per[label] = _window_in_child(work, repo, first, last, extra)
            loads.append(f"{os.getloadavg()[0]:.1f}")
    figures = growth(per)
    if build_s is not None:
        figures["synthetic_10x_build_s"] = build_s
    # This machine is shared: the 1-minute load average before and after each window.
    figures["load_avg_1m_per_window"] = "/".join(loads)
    return figures


def _main(argv: list[str]) -> int:
    """``--window CONFIG``: one window's run (CONFIG is the JSON ``_window_in_child`` writes)."""
    parser = argparse.ArgumentParser(description="one window of the scaling benchmark")
    parser.add_argument("--window", required=True, metavar="CONFIG")
    config = json.loads(parser.parse_args(argv).window)
    result = run_window(
        Path(config["work"]), Path(config["repo"]), config["first"], config["last"],
        config["extra"],
    )  # fmt: skip
    Path(config["out"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
