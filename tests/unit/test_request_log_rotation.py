"""The serving request log: no relative default, per-pod files, size rotation, and the monitoring
side reading every file of it (directory, glob, rotated siblings; local or fsspec URIs)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import fsspec
import pytest
from prometheus_client import REGISTRY

from components.monitor.core import read_request_log, request_log_files
from mlops.telemetry import REQUEST_LOG_DROPPED
from serving import transformer as T
from serving.transformer import RequestLog, build_parser, request_log_file

pytestmark = pytest.mark.unit


def record(i: int) -> dict:
    """One logged row in the transformer's format."""
    return {"ts": 0.0, "request_id": f"r{i}", "row": 0, "model": "flight-delay",
            "model_version": "3", "features": {"carrier": "UA", "distance": 1400.0 + i},
            "score": 0.25}  # fmt: skip


def test_no_request_log_unless_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The old default, runs/serving/requests.jsonl, was relative: on the chart's read-only root
    # filesystem the transformer could not start.
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["--model_name=flight-delay"])
    assert args.request_log is None
    log = RequestLog.from_args(args)
    log.write([record(0)])
    log.close()
    assert list(tmp_path.iterdir()) == []
    args = build_parser().parse_args(["--request_log=/mnt/requests", "--request_log_max_mb=8"])
    assert (args.request_log, args.request_log_max_mb) == (Path("/mnt/requests"), 8.0)


def test_a_jsonl_target_is_the_file_a_directory_gets_one_file_per_process(tmp_path: Path) -> None:
    assert request_log_file(tmp_path / "requests.jsonl") == tmp_path / "requests.jsonl"
    a = request_log_file(tmp_path, host="flight-delay-transformer-7d9f-abcde", pid=1)
    b = request_log_file(tmp_path, host="flight-delay-transformer-7d9f-fghij", pid=1)
    c = request_log_file(tmp_path, host="flight-delay-transformer-7d9f-abcde", pid=7)
    assert a.name == "requests-flight-delay-transformer-7d9f-abcde-1.jsonl"
    assert len({a, b, c}) == 3 and {a.parent, b.parent, c.parent} == {tmp_path}


def test_replicas_sharing_a_directory_never_write_one_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = []
    for pod in ("pod-a", "pod-b"):
        monkeypatch.setattr(T.socket, "gethostname", lambda pod=pod: pod)
        log = RequestLog(tmp_path)
        log.write([record(0), record(1)])
        logs.append(log)
    for log in logs:
        log.close()
    pid = os.getpid()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"requests-pod-a-{pid}.jsonl", f"requests-pod-b-{pid}.jsonl"]  # fmt: skip
    assert len(read_request_log(tmp_path)) == 4


def test_rotation_by_size_keeps_every_row(tmp_path: Path) -> None:
    log = RequestLog(tmp_path / "requests.jsonl", max_mb=2048 / (1 << 20))  # 2 KiB
    for i in range(100):
        log.write([record(i)])
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    rotated = [f for f in files if f != "requests.jsonl"]
    assert "requests.jsonl" in files and len(rotated) >= 3
    assert all(f.startswith("requests-2") and f.endswith("Z.jsonl") for f in rotated)
    for f in rotated:
        assert (tmp_path / f).stat().st_size <= 2048
    # The monitor given the live file reads the rotated ones with it, in order, none twice.
    served = read_request_log(tmp_path / "requests.jsonl")
    assert sorted(served["request_id"]) == sorted(f"r{i}" for i in range(100))
    assert len(request_log_files(tmp_path / "requests.jsonl")) == len(files)


def test_log_files_of_a_directory_a_glob_and_a_missing_path(tmp_path: Path) -> None:
    for name in ("requests-pod-a-1.jsonl", "requests-pod-a-1-20130101T000000000000Z.jsonl",
                 "requests-pod-b-1.jsonl"):  # fmt: skip
        (tmp_path / name).write_text(json.dumps(record(0)) + "\n")
    (tmp_path / "notes.txt").write_text("not a log")
    assert len(request_log_files(tmp_path)) == 3
    assert len(request_log_files(str(tmp_path / "requests-pod-a-*.jsonl"))) == 2
    with pytest.raises(FileNotFoundError):
        request_log_files(tmp_path / "nothing-here")


def test_a_log_file_reads_its_rotations_not_a_neighbour_sharing_its_prefix(tmp_path: Path) -> None:
    stamp = "20130101T000000000000Z"
    for name in ("requests.jsonl", f"requests-{stamp}.jsonl", "requests-canary.jsonl",
                 f"requests-canary-{stamp}.jsonl"):  # fmt: skip
        (tmp_path / name).write_text(json.dumps(record(0)) + "\n")
    assert [Path(f).name for f in request_log_files(tmp_path / "requests.jsonl")] == [
        "requests-20130101T000000000000Z.jsonl", "requests.jsonl"]  # fmt: skip


def test_a_line_still_being_written_is_left_for_the_next_window(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_text(json.dumps(record(0)) + "\n" + json.dumps(record(1))[:20])
    assert list(read_request_log(path)["request_id"]) == ["r0"]


def test_object_store_uris_are_read_through_fsspec_not_path() -> None:
    # memory:// stands in for gs:// or s3://: Path("gs://b/x") would become "gs:/b/x".
    root = f"memory://logs-{uuid.uuid4().hex}/requests"
    for name, rows in (("requests-pod-a-1.jsonl", (0, 1)), ("requests-pod-b-1.jsonl", (2,)),
                       ("requests-pod-a-1-20130101T000000000000Z.jsonl", (3, 4))):  # fmt: skip
        with fsspec.open(f"{root}/{name}", "w") as fh:
            fh.write("".join(json.dumps(record(i)) + "\n" for i in rows))
    files = request_log_files(root)
    assert len(files) == 3 and all(f.startswith("memory://") for f in files)
    served = read_request_log(root)
    assert sorted(served["request_id"]) == ["r0", "r1", "r2", "r3", "r4"]
    assert served["distance"].dtype == "float64"


def test_rotation_keeps_a_bounded_number_of_files_oldest_deleted(tmp_path: Path) -> None:
    log = RequestLog(tmp_path / "requests.jsonl", max_mb=1024 / (1 << 20), max_files=2)
    # Another process's files in the same directory, whose name starts with this one's stem.
    neighbour = tmp_path / "requests-2-20130101T000000000000Z.jsonl"
    neighbour.write_text(json.dumps(record(-1)) + "\n")
    for i in range(200):
        log.write([record(i)])
    log.close()
    rotated = T.rotated_files(tmp_path / "requests.jsonl")
    assert len(rotated) == 2 and neighbour not in rotated and neighbour.exists()
    # What is left is the newest rows: the live file's last row is the last one written.
    kept = read_request_log(tmp_path / "requests.jsonl")
    # (the monitor's reader globs <stem>-*.jsonl, so it reads the neighbour's row too.)
    ids = sorted(int(r[1:]) for r in kept["request_id"] if r != "r-1")
    assert ids[-1] == 199 and ids == list(range(ids[0], 200))
    assert ids[0] > 0  # the oldest rows went with the deleted files


def test_rows_reach_the_file_within_the_flush_interval_without_more_requests(
    tmp_path: Path,
) -> None:
    import time

    path = tmp_path / "requests.jsonl"
    log = RequestLog(path, flush_s=0.2)
    try:
        log.write([record(0)])
        assert path.read_bytes() == b""  # buffered, not a disk write per request
        deadline = time.monotonic() + 2.0
        while not path.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [r["request_id"] for r in map(json.loads, path.read_text().splitlines())] == ["r0"]
    finally:
        log.close()


def test_request_log_flags_and_their_bounds() -> None:
    args = build_parser().parse_args(["--request_log=/mnt/requests", "--request_log_flush_s=0.5",
                                      "--request_log_max_files=3"])  # fmt: skip
    log = RequestLog.from_args(args)
    assert (log.flush_s, log.max_files) == (0.5, 3)
    with pytest.raises(ValueError, match="flush_s"):
        RequestLog(None, flush_s=0)


def test_a_stalled_disk_never_blocks_a_write_and_bounds_the_queue(tmp_path: Path) -> None:
    import time

    path = tmp_path / "requests.jsonl"
    row_bytes = len(json.dumps(record(0), separators=(",", ":"))) + 1
    # The writer's turn never comes during the test (30 s): the queue holds what was written.
    log = RequestLog(path, flush_s=30, max_queued_mb=10 * row_bytes / (1 << 20))
    dropped_before = REGISTRY.get_sample_value(REQUEST_LOG_DROPPED)
    try:
        log.write([record(0)])  # opens the file and starts the writer
        # The writer holds the file while its write or flush is stuck on the disk.
        with log._lock:
            started = time.perf_counter()
            for i in range(1, 20):
                log.write([record(i)])
            took = time.perf_counter() - started
        assert took < 0.05, "the request path waited for the file"
        assert log.dropped_rows == 10  # 10 rows fit the queue, the rest were counted and dropped
        assert REGISTRY.get_sample_value(REQUEST_LOG_DROPPED) == dropped_before + 10
    finally:
        log.close()
    written = [r["request_id"] for r in map(json.loads, path.read_text().splitlines())]
    assert written == [f"r{i}" for i in range(10)]
