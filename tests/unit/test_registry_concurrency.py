"""The registry across real processes: concurrent pushes, alias moves, retries and crashes.

Every writer here is a separate interpreter (``spawn``), so no in-process lock can help: only
the registry's cross-process locking (``flock``, or the exclusive-create lease object that
object stores use) and its exclusive creates keep versions distinct and events complete.
A barrier before each round makes the writers really overlap.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem

from components.push.core import push, push_key
from mlops.registry import (
    CANDIDATE,
    LEASE_FILE,
    PRODUCTION,
    Lineage,
    ModelRegistry,
    RegistryError,
    tree_hash,
)

pytestmark = pytest.mark.unit

MODEL = "flight-delay"
WORKERS = 4
ROUNDS = 5
BLESSING = {"blessed": True, "reasons": ["ok overall AUC"], "overall": {"auc": 0.7}}
VALID = {"ok": True, "anomalies": []}


class _WholeObject(io.BytesIO):
    """A write that appears whole on close, as an object store's PUT does; with ``exclusive``
    it fails on close when the object exists, as a PUT with ``If-None-Match: *`` does."""

    def __init__(self, path: str, exclusive: bool) -> None:
        super().__init__()
        self.path, self.exclusive = path, exclusive

    def close(self) -> None:
        if self.closed:
            return
        data = self.getvalue()
        super().close()
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.path), prefix=".put-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            if self.exclusive:
                os.link(tmp, self.path)  # raises FileExistsError: the precondition failed
            else:
                os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


class ObjectStoreOnDisk(LocalFileSystem):
    """An object store's write semantics over a local directory that several processes share.

    No object store can run here; this gives what the registry relies on from one (whole-object
    writes, conditional create) with a protocol the registry treats as remote, so its
    cross-process path for object stores runs between real processes.
    """

    protocol = "objstore"

    def _open(self, path: str, mode: str = "rb", block_size: Any = None, **kwargs: Any) -> Any:
        if mode in ("wb", "xb"):
            return _WholeObject(self._strip_protocol(path), exclusive=mode == "xb")
        return super()._open(path, mode, block_size, **kwargs)

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        with self._open(path, "xb" if mode == "create" else "wb") as fh:
            fh.write(value)


# At import, so that the spawned writers (which import this module) know the protocol too.
fsspec.register_implementation("objstore", ObjectStoreOnDisk, clobber=True)


def fake_model(path: Path, marker: str = "m") -> Path:
    """A directory shaped like a SavedModel; the registry copies bytes, it never loads them."""
    (path / "variables").mkdir(parents=True, exist_ok=True)
    (path / "saved_model.pb").write_bytes(f"graph-{marker}".encode())
    (path / "variables" / "variables.index").write_bytes(b"index")
    return path


def _lineage(run: str) -> Lineage:
    return Lineage(spans=["2013-01"], blessed=True, pipeline_run_id=run, code_revision="abc")


def _pushes_and_moves(args: tuple[str, str, str, int, Any]) -> list[int]:
    """One writer: each round registers a version, moves ``candidate`` to it, appends an event."""
    uri, lock, model_dir, worker, barrier = args
    reg = ModelRegistry(uri, lock=lock)
    mine = []
    for r in range(ROUNDS):
        barrier.wait()
        v = reg.register(MODEL, model_dir, _lineage(f"w{worker}-r{r}"), {}).version
        reg.set_alias(MODEL, CANDIDATE, v, reason=f"w{worker}")
        reg.record_event(MODEL, v, "touched", {"by": worker, "round": r})
        mine.append(v)
    return mine


def _run_workers(func: Any, jobs: list[tuple[Any, ...]]) -> list[Any]:
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no shared in-process lock
    with ctx.Manager() as manager, ctx.Pool(len(jobs)) as pool:
        barrier = manager.Barrier(len(jobs), timeout=120)
        return pool.map(func, [(*job, barrier) for job in jobs], chunksize=1)


def alias_chain(reg: ModelRegistry, alias: str) -> list[int]:
    """The alias's moves in order, rebuilt from the ``alias_set`` events' previous versions.

    Raises AssertionError when two moves saw the same previous version (a lost update) or a
    move is missing from the chain.
    """
    after: dict[int | None, int] = {}
    for v in reg.versions(MODEL):
        for e in v.lineage.events:
            if e["kind"] == "alias_set" and e["details"]["alias"] == alias:
                prev = e["details"]["previous_version"]
                assert prev not in after, f"two moves of {alias} both followed {prev}"
                after[prev] = v.version
    chain: list[int] = []
    cur: int | None = None
    while cur in after:
        cur = after[cur]
        chain.append(cur)
    assert len(chain) == len(after), "an alias move is not in the chain"
    return chain


@pytest.mark.parametrize(
    ("scheme", "lock"), [("", "flock"), ("", "lease"), ("objstore://", "lease")]
)
def test_concurrent_pushes_and_alias_moves_across_processes(
    tmp_path: Path, scheme: str, lock: str
) -> None:
    uri = scheme + str(tmp_path / "registry")
    model_dir = str(fake_model(tmp_path / "model"))
    results = _run_workers(_pushes_and_moves, [(uri, lock, model_dir, w) for w in range(WORKERS)])

    total = WORKERS * ROUNDS
    assert sorted(v for mine in results for v in mine) == list(range(1, total + 1))
    reg = ModelRegistry(uri, lock=lock)
    versions = reg.versions(MODEL)
    assert len(versions) == total
    for v in versions:
        assert [e["kind"] for e in v.lineage.events] == ["registered", "alias_set", "touched"]
    chain = alias_chain(reg, CANDIDATE)
    assert len(chain) == total and reg.aliases(MODEL) == {CANDIDATE: chain[-1]}
    assert not (tmp_path / "registry" / MODEL / LEASE_FILE).exists()  # every lease released


def _same_key_push(args: tuple[str, str, Any]) -> tuple[int | None, bool]:
    uri, model_dir, barrier = args
    barrier.wait()
    task = "root/push-op/pushed"
    result = push(uri, MODEL, model_dir, BLESSING, VALID, ["2013-01"],
                  pipeline_run_id="run-7", task_id=task, code_rev="abc")  # fmt: skip
    return result.version, result.pushed


def test_concurrent_attempts_of_one_push_make_one_version(tmp_path: Path) -> None:
    """A retry that starts while its first attempt still runs (a pod thought lost)."""
    uri = str(tmp_path / "registry")
    model_dir = str(fake_model(tmp_path / "model"))
    results = _run_workers(_same_key_push, [(uri, model_dir)] * WORKERS)

    assert {v for v, _ in results} == {results[0][0]} and all(p for _, p in results)
    reg = ModelRegistry(uri)
    (only,) = reg.versions(MODEL)
    assert reg.aliases(MODEL) == {CANDIDATE: only.version, PRODUCTION: only.version}
    kinds = [(e["kind"], e["details"].get("alias")) for e in only.lineage.events]
    assert kinds == [("registered", None), ("alias_set", CANDIDATE), ("alias_set", PRODUCTION)]


def test_retried_push_returns_the_same_version_and_a_new_run_a_new_one(tmp_path: Path) -> None:
    uri = str(tmp_path / "registry")
    model_dir = fake_model(tmp_path / "model")
    args = (uri, MODEL, model_dir, BLESSING, VALID, ["2013-01"])
    first = push(*args, pipeline_run_id="run-1", task_id="t", code_rev="abc")
    retry = push(*args, pipeline_run_id="run-1", task_id="t", code_rev="abc")
    assert (first.version, first.reused) == (1, False)
    assert (retry.version, retry.reused, retry.pushed) == (1, True, True)
    assert "earlier attempt" in retry.reason
    reg = ModelRegistry(uri)
    assert len(reg.versions(MODEL)) == 1
    assert [e["kind"] for e in reg.lineage(MODEL, 1).events] == [
        "registered", "alias_set", "alias_set",
    ]  # fmt: skip
    key = reg.lineage(MODEL, 1).idempotency_key
    assert key is not None and len(key) == 64

    assert push(*args, pipeline_run_id="run-2", task_id="t", code_rev="abc").version == 2
    # A retry handed another model is not the same push.
    other = fake_model(tmp_path / "other", marker="other")
    assert push_key(MODEL, other, "run-1", "t") != push_key(MODEL, model_dir, "run-1", "t")
    # Nor one handed another blessing: a retry's inputs are the same as its first attempt's.
    assert push_key(MODEL, model_dir, "run-1", "t", {"blessing": {"blessed": False}}) != (
        push_key(MODEL, model_dir, "run-1", "t", {"blessing": {"blessed": True}})
    )
    # Without run or task identity nothing tells a retry from a new run: a new version each.
    assert push_key(MODEL, model_dir, None, None) is None
    assert push(*args, code_rev="abc").version == 3


def _crashing_push(args: tuple[str, str, str]) -> None:
    """A push attempt whose process dies at ``where``, as an OOM-killed pod would."""
    uri, model_dir, where = args

    def die(*_: object, **__: object) -> None:
        os._exit(3)

    if where == "alias":  # version complete, no alias moved yet
        ModelRegistry.set_alias = die  # type: ignore[assignment,method-assign]
    else:  # number claimed and recorded, model half copied, no lineage.json
        copy = ModelRegistry._copy_file

        def copy_then_die(self: ModelRegistry, *a: Any) -> None:
            copy(self, *a)
            die()

        ModelRegistry._copy_file = copy_then_die  # type: ignore[method-assign]
    push(uri, MODEL, model_dir, BLESSING, VALID, ["2013-01"],
         pipeline_run_id="run-1", task_id="t", code_rev="abc")  # fmt: skip


@pytest.mark.parametrize("where", ["alias", "copy"])
def test_retry_after_a_crash_finishes_the_push(tmp_path: Path, where: str) -> None:
    uri = str(tmp_path / "registry")
    model_dir = str(fake_model(tmp_path / "model"))
    ctx = multiprocessing.get_context("spawn")
    attempt = ctx.Process(target=_crashing_push, args=((uri, model_dir, where),))
    attempt.start()
    attempt.join(120)
    assert attempt.exitcode == 3
    reg = ModelRegistry(uri)
    assert reg.aliases(MODEL) == {}
    assert [v.version for v in reg.versions(MODEL)] == ([1] if where == "alias" else [])

    retry = push(uri, MODEL, model_dir, BLESSING, VALID, ["2013-01"],
                 pipeline_run_id="run-1", task_id="t", code_rev="abc")  # fmt: skip
    assert retry.version == 1 and retry.pushed
    assert retry.reused == (where == "alias")
    (v,) = reg.versions(MODEL)
    assert reg.aliases(MODEL) == {CANDIDATE: 1, PRODUCTION: 1}
    assert tree_hash(v.local_model_path) == tree_hash(model_dir)
    assert [e["kind"] for e in v.lineage.events] == ["registered", "alias_set", "alias_set"]


def test_an_expired_lease_of_a_dead_holder_is_broken(tmp_path: Path) -> None:
    uri = str(tmp_path / "registry")
    reg = ModelRegistry(uri, lock="lease", lease_s=1.0, lock_timeout_s=30)
    v = reg.register(MODEL, fake_model(tmp_path / "model"), _lineage("r"), {}).version
    lease = tmp_path / "registry" / MODEL / LEASE_FILE
    # A holder that died mid-update; its lease expires a second from now.
    lease.write_text(json.dumps({"token": "dead", "host": "gone", "pid": 1,
                                 "expires": time.time() + 1.0}))  # fmt: skip
    start = time.monotonic()
    reg.set_alias(MODEL, CANDIDATE, v)
    assert 0.9 < time.monotonic() - start < 10
    assert reg.aliases(MODEL) == {CANDIDATE: v} and not lease.exists()

    # A creator that died before writing its record leaves it empty: broken after a lease too.
    lease.write_text("")
    reg.record_event(MODEL, v, "touched")
    assert not lease.exists()


def test_a_live_lease_is_waited_for_and_the_timeout_names_its_holder(tmp_path: Path) -> None:
    uri = str(tmp_path / "registry")
    reg = ModelRegistry(uri, lock="lease", lease_s=60, lock_timeout_s=0.5)
    v = reg.register(MODEL, fake_model(tmp_path / "model"), _lineage("r"), {}).version
    lease = tmp_path / "registry" / MODEL / LEASE_FILE
    lease.write_text(json.dumps({"token": "x", "host": "pod-a", "pid": 42,
                                 "expires": time.time() + 60}))  # fmt: skip
    with pytest.raises(RegistryError, match="held by pod-a pid 42"):
        reg.set_alias(MODEL, CANDIDATE, v)
    assert reg.aliases(MODEL) == {}  # nothing written without the lock
    assert [e["kind"] for e in reg.lineage(MODEL, v).events] == ["registered"]


def test_bad_lock_settings_and_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="lock must be"):
        ModelRegistry(str(tmp_path), lock="nfs")  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match="needs a local registry"):
        ModelRegistry("memory://r", lock="flock")
    reg = ModelRegistry(str(tmp_path / "registry"))
    with pytest.raises(RegistryError, match="idempotency_key must be"):
        reg.register(MODEL, fake_model(tmp_path / "m"), _lineage("r"), {}, idempotency_key="../x")
    assert not (tmp_path / "registry" / MODEL / "versions").exists()  # no number burnt
