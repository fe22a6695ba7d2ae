"""Multi-worker training: the worker entry point and a launcher of workers on loopback.

Each worker is ``python -m components.train.workers ...`` with a ``TF_CONFIG`` naming every
worker's address and its own task, exactly what the Kubeflow Training Operator sets in a TFJob's
pods (``components.train.tfjob``). Here, :func:`run_local_workers` starts them as processes on
127.0.0.1: TF's collective ops then run over gRPC between real processes, as in the cluster.

Only the chief writes the model, the logs and ``--result`` (the :class:`TrainResult` as JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

from components.train.core import TrainResult

# The module every worker runs (the TFJob's container command names it too).
WORKER_MODULE = "components.train.workers"
RESULT_FILE = "result.json"


def worker_args(
    graph_dir: str, examples_dir: str, model_dir: str, log_dir: str, hyperparameters: str,
    checkpoint_dir: str, result_path: str,
) -> list[str]:  # fmt: skip
    """The command-line arguments of a worker (after ``python -m WORKER_MODULE``)."""
    return [
        "--transform-graph", graph_dir, "--examples", examples_dir, "--model", model_dir,
        "--logs", log_dir, "--hyperparameters", hyperparameters,
        "--checkpoints", checkpoint_dir, "--result", result_path,
    ]  # fmt: skip


def tf_config(addresses: list[str], index: int) -> str:
    """The ``TF_CONFIG`` of worker ``index`` in a cluster of ``worker`` tasks (0 is the chief)."""
    return json.dumps(
        {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
    )


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (held open together, so they are distinct)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


class WorkerError(RuntimeError):
    """A training worker failed or ran out of time; the message carries its log's tail."""


def run_local_workers(
    workers: int,
    graph_dir: Path,
    examples_dir: Path,
    model_dir: Path,
    log_dir: Path,
    hyperparameters: str,
    work_dir: Path,
    timeout_s: float = 3600.0,
) -> TrainResult:
    """Train with ``workers`` processes on loopback, as a TFJob's pods would; return the result.

    Args:
        workers: Number of worker processes (2 or more).
        graph_dir: The transform graph.
        examples_dir: The transformed examples.
        model_dir: Where the chief exports the model.
        log_dir: Where the chief writes TensorBoard logs.
        hyperparameters: JSON of ``HyperParameters``.
        work_dir: Checkpoints, the workers' logs (``worker-<i>.log``) and the result file.
        timeout_s: Wall-clock limit for the whole job.

    Raises:
        WorkerError: A worker exited non-zero (the others are stopped) or time ran out.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    addresses = [f"127.0.0.1:{port}" for port in free_ports(workers)]
    result_path = work_dir / RESULT_FILE
    args = worker_args(
        str(graph_dir), str(examples_dir), str(model_dir), str(log_dir), hyperparameters,
        str(work_dir / "checkpoints"), str(result_path),
    )  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    logs = [work_dir / f"worker-{i}.log" for i in range(workers)]
    try:
        for i, log in enumerate(logs):
            env = {**os.environ, "TF_CONFIG": tf_config(addresses, i)}
            command = [sys.executable, "-m", WORKER_MODULE, *args]
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
                )
        deadline = time.monotonic() + timeout_s
        while any(p.poll() is None for p in procs):
            failed = [i for i, p in enumerate(procs) if p.returncode not in (None, 0)]
            if failed:
                i = failed[0]
                raise WorkerError(
                    f"worker {i} exited with {procs[i].returncode}:\n{_tail(logs[i])}"
                )
            if time.monotonic() > deadline:
                raise WorkerError(f"{workers} workers still running after {timeout_s:.0f}s")
            time.sleep(0.5)
        for i, p in enumerate(procs):
            if p.returncode != 0:
                raise WorkerError(f"worker {i} exited with {p.returncode}:\n{_tail(logs[i])}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return TrainResult(**json.loads(result_path.read_text()))


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:]


def main(argv: list[str] | None = None) -> int:
    """One worker: train under ``TF_CONFIG``'s cluster; the chief writes ``--result``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transform-graph", type=Path, required=True)
    parser.add_argument("--examples", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--logs", type=Path, required=True)
    parser.add_argument("--hyperparameters", default="{}")
    parser.add_argument("--checkpoints", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)

    from components.train.core import Cluster, HyperParameters, train

    cluster = Cluster.from_tf_config(os.environ.get("TF_CONFIG"))
    result = train(args.transform_graph, args.examples, args.model, args.logs,
                   HyperParameters.from_json(args.hyperparameters), cluster,
                   args.checkpoints)  # fmt: skip
    if cluster is None or cluster.is_chief:
        args.result.parent.mkdir(parents=True, exist_ok=True)
        args.result.write_text(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
