"""Model registry: numbered model versions with their lineage, and aliases that deploy moves.

A registry is a directory tree on any fsspec filesystem (a local directory by default; ``s3://``,
``gs://`` or ``memory://`` URIs work the same way)::

    <uri>/<model_name>/aliases.json            {"production": 3, "candidate": 4}
    <uri>/<model_name>/versions/<n>/.claim     exclusive claim of version number n
    <uri>/<model_name>/versions/<n>/model/     the SavedModel (KServe storageUri points here)
    <uri>/<model_name>/versions/<n>/transform_graph/   optional TFT transform graph
    <uri>/<model_name>/versions/<n>/schema.pbtxt       optional TFDV schema
    <uri>/<model_name>/versions/<n>/statistics/        optional TFDV statistics of the training data
    <uri>/<model_name>/versions/<n>/evaluation.json    the evaluation (metrics, slices, blessing)
    <uri>/<model_name>/versions/<n>/lineage.json       which data, code and parameters made it

``lineage.json`` is written last, exclusively: a version without it is an interrupted
registration and is ignored (its number stays used, so numbers are never reused).

Idempotent registration: a caller that may retry (the pipeline's push step) passes an
``idempotency_key``; the first attempt records ``<uri>/<model_name>/registrations/<key>.json``
(created exclusively) with its version number, and a retry with the same key returns that
version, or finishes it when the earlier attempt died before ``lineage.json``.

Concurrency (see ``docs/registry.md`` for each fsspec backend): a version number is claimed by
creating ``.claim`` exclusively, so two registrations never get the same number. Alias moves and
event appends are read-modify-writes under a per-model lock that holds across processes and
pods: ``fcntl.flock`` on ``<model_name>/.lock`` for local and POSIX shared filesystems, and on
object stores a lease object ``<model_name>/.lease`` created exclusively (mode ``"xb"``: a
conditional put), broken only once its holder's lease has expired. A backend without atomic
create falls back to a lock within this process and logs a warning.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import logging
import os
import posixpath
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlops.artifacts import SCHEMA_FILE, TRANSFORM_GRAPH_DIR
from mlops.config import DEFAULT_MODEL_NAME
from mlops.localfiles import exclusive_lock, replace_atomically, write_aside

if TYPE_CHECKING:
    import fsspec

DEFAULT_REGISTRY = "registry"
PRODUCTION = "production"
CANDIDATE = "candidate"
# Serving name of the candidate when one server holds both versions (shadow, canary replay).
CANDIDATE_SUFFIX = "-candidate"
# Aliases that may only point at a blessed version: serving follows them.
PROTECTED_ALIASES: tuple[str, ...] = (PRODUCTION,)

ALIASES_FILE = "aliases.json"
LINEAGE_FILE = "lineage.json"
EVALUATION_FILE = "evaluation.json"
CLAIM_FILE = ".claim"
MODEL_DIR = "model"
STATISTICS_DIR = "statistics"
REGISTRATIONS_DIR = "registrations"
FLOCK_FILE = ".lock"
LEASE_FILE = ".lease"
# fsspec protocols whose exclusive create (mode "xb") is atomic against other processes and pods:
# O_EXCL locally; a conditional put on object stores (gcsfs: ifGenerationMatch=0; s3fs and adlfs
# from 2024.12: If-None-Match / overwrite=False). memory:// lives in one process, where the
# process lock makes its check-then-create atomic.
ATOMIC_CREATE_PROTOCOLS = frozenset(
    {"file", "local", "gs", "gcs", "s3", "s3a", "abfs", "az", "abfss", "memory"}
)
LockMode = Literal["auto", "flock", "lease", "process"]
# How long a lease-lock holder may keep it before others may break it: far longer than a
# read-modify-write of a small JSON file, far shorter than a pipeline retry's backoff.
DEFAULT_LEASE_S = 60.0
DEFAULT_LOCK_TIMEOUT_S = 300.0
_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
# A version's SavedModel directory as any storage URI names it: ``.../versions/<n>/model``.
_MODEL_URI_VERSION = re.compile(r"versions/(\d+)/" + MODEL_DIR + r"/?$")


def version_from_uri(uri: str) -> int | None:
    """The registry version a SavedModel URI points at (``.../versions/3/model`` -> 3).

    Works for any scheme (``pvc://``, ``gs://``, a local path): the version is read from the
    path the registry lays out, which is how the rollout controller tells which version a
    predictor's ``STORAGE_URI`` serves. ``None`` when the URI is not a registry version's model.
    """
    m = _MODEL_URI_VERSION.search(uri)
    return int(m.group(1)) if m else None


# Process-wide locks per (protocol, path): fcntl covers other processes, this covers threads and
# in-process filesystems such as memory://.
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
_log = logging.getLogger(__name__)


class RegistryError(Exception):
    """Raised for an unknown model, version or alias, or a refused registry operation."""


class UnblessedVersionError(RegistryError):
    """Raised when a protected alias (``production``) would point at an unblessed version."""


def utc_now() -> str:
    """The current UTC time as ISO 8601 with seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def code_revision(repo_dir: Path | None = None) -> tuple[str, bool]:
    """The git commit of the code and whether the working tree has uncommitted changes.

    Returns ``("unknown", False)`` outside a git checkout (e.g. inside a component image).
    """
    cwd = str(repo_dir or Path(__file__).resolve().parents[1])
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if rev.returncode != 0:
            return "unknown", False
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown", False
    return rev.stdout.strip(), bool(status.stdout.strip())


def code_revision_label(repo_dir: Path | None = None) -> str:
    """:func:`code_revision` as one string: ``<commit>``, ``<commit>-dirty`` or ``unknown``.

    The form of the pipeline's ``code_revision`` parameter, which the push step records.
    """
    rev, dirty = code_revision(repo_dir)
    return f"{rev}-dirty" if dirty else rev


def file_hash(path: str | Path) -> str:
    """SHA-256 of a file's bytes (any fsspec URI), e.g. of the schema for lineage."""
    import fsspec

    h = hashlib.sha256()
    with fsspec.open(str(path), "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_hash(path: str | Path) -> str:
    """SHA-256 over a directory's files (relative paths and bytes) or one file (any fsspec URI).

    The same tree gives the same digest wherever it lies, e.g. a SavedModel before and after a
    copy; push uses it to tell a retry of the same registration from a new one.
    """
    import fsspec

    fs, root = fsspec.core.url_to_fs(str(path))
    h = hashlib.sha256()
    files = [root] if fs.isfile(root) else sorted(fs.find(root))
    for f in files:
        rel = posixpath.basename(f) if f == root else posixpath.relpath(f, root)
        h.update(rel.encode() + b"\0")
        with fs.open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


@dataclass
class Lineage:
    """Which data, code and parameters made a model version, and what happened to it since.

    Attributes:
        spans: Monthly data spans trained on, e.g. ``["2013-01", "2013-02"]``.
        train_hash: Content hash of the training split (``mlops.data.content_hash``).
        eval_hash: Content hash of the evaluation split.
        schema_hash: SHA-256 of the TFDV schema file the data was validated against.
        code_revision: Git commit of the code, or ``"unknown"``.
        code_dirty: Whether the working tree had uncommitted changes at that commit.
        hyperparameters: The trainer's hyperparameters.
        metrics: Summary of the overall evaluation metrics (AUC, log loss, ...).
        baseline_version: The production version the candidate was compared with, if any.
        blessed: The evaluator's verdict.
        blessing_reasons: Why it was (not) blessed, one check per line.
        validation_ok: The data validation verdict (``None`` when not recorded).
        pipeline_run_id: The KFP run that produced the version.
        created_at: Registration time, UTC ISO 8601.
        events: Deployment-state events appended later (alias moves, canary steps).
        idempotency_key: The key a retried registration shares with its first attempt
            (``None`` when the caller gave none).
    """

    spans: list[str] = field(default_factory=list)
    train_hash: str | None = None
    eval_hash: str | None = None
    schema_hash: str | None = None
    code_revision: str = "unknown"
    code_dirty: bool = False
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    baseline_version: int | None = None
    blessed: bool = False
    blessing_reasons: list[str] = field(default_factory=list)
    validation_ok: bool | None = None
    pipeline_run_id: str | None = None
    created_at: str = field(default_factory=utc_now)
    events: list[dict[str, Any]] = field(default_factory=list)
    idempotency_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The lineage as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Lineage:
        """Build from a dict, ignoring keys a newer writer may have added."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def describe(self) -> str:
        """Answer "which data, code and parameters made this" in a few lines."""
        dirty = " (uncommitted changes)" if self.code_dirty else ""
        hp = json.dumps(self.hyperparameters, sort_keys=True)
        return "\n".join(
            [
                f"data:   spans {', '.join(self.spans) or '-'}; train sha256 "
                f"{_short(self.train_hash)}, eval sha256 {_short(self.eval_hash)}, "
                f"schema sha256 {_short(self.schema_hash)}",
                f"code:   {self.code_revision}{dirty}",
                f"params: {hp}",
                f"run:    {self.pipeline_run_id or '-'}, registered {self.created_at}",
                f"gate:   blessed={self.blessed}, validation_ok={self.validation_ok}, "
                f"baseline version {self.baseline_version or '-'}",
            ]
        )


def _short(digest: str | None) -> str:
    return digest[:12] if digest else "-"


@dataclass(frozen=True)
class ModelVersion:
    """One registered version.

    Attributes:
        model_name: The registered model.
        version: Version number, from 1.
        uri: The version directory: a local absolute path, or a URI with its protocol.
        lineage: Its lineage record.
        aliases: Aliases that point at it now.
    """

    model_name: str
    version: int
    uri: str
    lineage: Lineage
    aliases: tuple[str, ...] = ()

    @property
    def model_uri(self) -> str:
        """The SavedModel directory: what KServe's ``storageUri`` points at."""
        return _join(self.uri, MODEL_DIR)

    @property
    def transform_uri(self) -> str:
        """The TFT transform graph directory (present when it was registered)."""
        return _join(self.uri, TRANSFORM_GRAPH_DIR)

    @property
    def statistics_uri(self) -> str:
        """The training data's TFDV statistics directory (present when it was registered)."""
        return _join(self.uri, STATISTICS_DIR)

    @property
    def is_local(self) -> bool:
        """Whether the version lives on the local filesystem."""
        return "://" not in self.uri

    def local_path(self) -> Path:
        """The version directory as a local path.

        Raises:
            RegistryError: The registry is remote; download with ``ModelRegistry.download``.
        """
        if not self.is_local:
            raise RegistryError(f"{self.uri} is not local; use ModelRegistry.download()")
        return Path(self.uri)

    @property
    def local_model_path(self) -> Path:
        """The SavedModel directory as a local path (local registries only)."""
        return self.local_path() / MODEL_DIR


def _exists(uri: str | Path) -> bool:
    import fsspec

    fs, path = fsspec.core.url_to_fs(str(uri))
    return bool(fs.exists(path))


def _join(base: str, *parts: str) -> str:
    return posixpath.join(base, *parts)


def download_tree(fs: fsspec.AbstractFileSystem, src: str, dest: Path) -> Path:
    """Copy every file under ``src`` on ``fs`` into the local directory ``dest``; returns it."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in fs.find(src):
        target = dest / posixpath.relpath(f, src)
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(f, str(target))
    return dest


def serving_uri(version: ModelVersion, root: str = "") -> str:
    """The KServe ``storageUri`` of a version's SavedModel, seen from the serving side.

    Pipeline steps and KServe may reach one registry by different names: the steps mount the
    registry's PVC at ``/mnt/registry``, KServe reads the same claim as ``pvc://<claim>``.

    Args:
        version: The registered version.
        root: The registry root as KServe addresses it, e.g. ``pvc://flight-delay-registry``;
            ``""`` when KServe reads the registry URI itself (object storage, e.g. ``gs://``).

    Returns:
        e.g. ``pvc://flight-delay-registry/flight-delay/versions/3/model``.
    """
    if not root:
        return version.model_uri
    return _join(root.rstrip("/"), version.model_name, "versions", str(version.version), MODEL_DIR)


class ModelRegistry:
    """A model registry on an fsspec filesystem.

    Args:
        uri: Registry root: a local directory (default ``registry``) or an fsspec URI.
        lock: How alias moves and event appends are serialised across writers: ``"auto"``
            (``flock`` for local paths, ``lease`` for backends with atomic create, otherwise
            ``process`` with a warning), or one of them explicitly, e.g. ``"lease"`` on a
            shared filesystem whose ``flock`` is not shared between clients.
        lease_s: Seconds after which a ``lease`` lock whose holder died may be broken.
        lock_timeout_s: Seconds to wait for the lock before giving up with ``RegistryError``.
    """

    def __init__(
        self,
        uri: str = DEFAULT_REGISTRY,
        lock: LockMode = "auto",
        lease_s: float = DEFAULT_LEASE_S,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    ) -> None:
        import fsspec

        self.uri = uri
        self.fs, self.root = fsspec.core.url_to_fs(uri)
        protocol = self.fs.protocol
        protocols = protocol if isinstance(protocol, tuple) else (protocol,)
        self.local = "file" in protocols
        if lock not in ("auto", "flock", "lease", "process"):
            raise RegistryError(f"lock must be auto, flock, lease or process, not {lock!r}")
        if lock == "flock" and not self.local:
            raise RegistryError(f"lock 'flock' needs a local registry, not {uri}")
        self.atomic_create = bool(ATOMIC_CREATE_PROTOCOLS.intersection(protocols))
        if lock == "auto":
            lock = "flock" if self.local else ("lease" if self.atomic_create else "process")
            if lock == "process":
                _log.warning(
                    "registry %s: fsspec protocol %s has no atomic create; alias moves and "
                    "event appends are serialised only within this process",
                    uri,
                    "/".join(protocols),
                )
        self.lock_mode: LockMode = lock
        self.lease_s = lease_s
        self.lock_timeout_s = lock_timeout_s

    # -- paths ---------------------------------------------------------------------------------

    def _model_path(self, model_name: str) -> str:
        if not model_name or "/" in model_name or model_name.startswith("."):
            raise RegistryError(f"invalid model name {model_name!r}")
        return _join(self.root, model_name)

    def _version_path(self, model_name: str, version: int) -> str:
        return _join(self._model_path(model_name), "versions", str(int(version)))

    def _registration_path(self, model_name: str, key: str) -> str:
        if not _IDEMPOTENCY_KEY.match(key):
            raise RegistryError(
                "idempotency_key must be 8-128 letters, digits, '-' or '_', "
                f"got {len(key)} characters"
            )
        return _join(self._model_path(model_name), REGISTRATIONS_DIR, f"{key}.json")

    def _public(self, path: str) -> str:
        return path if self.local else self.fs.unstrip_protocol(path)

    # -- locking -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self, model_name: str) -> Iterator[None]:
        """Serialise read-modify-write of aliases and lineage events for one model.

        Not re-entrant: code holding it calls the ``*_locked`` helpers, never a public method
        that takes it again.
        """
        key = f"{self.fs.protocol}:{self._model_path(model_name)}"
        with _LOCKS_GUARD:
            lock = _LOCKS.setdefault(key, threading.Lock())
        # The thread lock first: flock is per open file, so two threads of one process would
        # otherwise each get it, and the lease object is one per model, not per thread.
        with lock:
            if self.lock_mode == "flock":
                with self._flock(model_name):
                    yield
            elif self.lock_mode == "lease":
                with self._lease(model_name):
                    yield
            else:
                yield

    @contextlib.contextmanager
    def _flock(self, model_name: str) -> Iterator[None]:
        with exclusive_lock(_join(self._model_path(model_name), FLOCK_FILE)):
            yield

    def _read_lease(self, path: str) -> dict[str, Any] | None:
        """The lease holder's record; ``None`` while it is being written or just removed."""
        try:
            raw = self._read_json(path)
        except (FileNotFoundError, ValueError):
            return None
        return raw if isinstance(raw, dict) else None

    @contextlib.contextmanager
    def _lease(self, model_name: str) -> Iterator[None]:
        """A lock object created exclusively; its holder removes it, or it expires."""
        path = _join(self._model_path(model_name), LEASE_FILE)
        token = uuid.uuid4().hex
        holder = {"token": token, "host": socket.gethostname(), "pid": os.getpid()}
        start = time.monotonic()
        unreadable_since: float | None = None
        delay = 0.002
        while True:
            body = dict(holder, expires=time.time() + self.lease_s)
            if self._create_exclusive(path, body):
                break
            current = self._read_lease(path)
            now = time.monotonic()
            if current is None:
                # Being written or removed; a creator that died before writing leaves it
                # unreadable for good, so that counts as expired after a whole lease.
                unreadable_since = unreadable_since if unreadable_since is not None else now
                stale = now - unreadable_since > self.lease_s
            else:
                unreadable_since = None
                stale = float(current.get("expires", 0)) < time.time()
            if stale:
                again = self._read_lease(path)
                # Re-read just before removing, so a breaker that lost the race to another
                # does not remove the lease that one has just taken.
                if again == current:
                    _log.warning("registry %s: breaking expired lock %s", self.uri, path)
                    with contextlib.suppress(FileNotFoundError):
                        self.fs.rm_file(path)
                continue
            if now - start > self.lock_timeout_s:
                who = current or {}
                raise RegistryError(
                    f"timed out after {self.lock_timeout_s:.0f} s waiting for the registry "
                    f"lock {self._public(path)} (held by {who.get('host')} pid "
                    f"{who.get('pid')})"
                )
            time.sleep(delay * (1 + random.random()))  # jitter: racers do not retry in step
            delay = min(delay * 2, 0.1)
        try:
            yield
        finally:
            if (self._read_lease(path) or {}).get("token") == token:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(path)

    # -- JSON helpers --------------------------------------------------------------------------

    def _read_json(self, path: str) -> Any:
        with self.fs.open(path, "rb") as fh:
            return json.loads(fh.read().decode())

    def _write_json(self, path: str, value: Any) -> None:
        """Write JSON so readers see the old or the new content, never a partial file."""
        data = (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()
        if self.local:
            replace_atomically(path, data)
        else:
            self.fs.pipe_file(path, data)  # one PUT: object stores replace objects atomically

    def _create_exclusive(self, path: str, value: Any) -> bool:
        """Create a JSON file only if it does not exist; ``False`` when it already did.

        Readers see no file or the whole file: locally it is written aside and hard-linked into
        place (``link`` fails on an existing name, atomically); object stores upload the whole
        object with an if-absent precondition on close.
        """
        data = (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()
        if self.local:
            tmp = write_aside(os.path.dirname(path), data)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            except OSError as err:
                if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                # No hard links (some SMB and FUSE mounts): O_EXCL is still atomic, but a
                # reader may see the file before its bytes.
                try:
                    out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(out, "wb") as fh:
                    fh.write(data)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            return True
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        try:
            with self.fs.open(path, "xb") as fh:
                fh.write(data)
        except FileExistsError:
            return False
        return True

    def _copy_tree(self, source: str | Path, dest: str) -> None:
        """Copy a directory (or one file) from a local path or fsspec URI into ``dest``."""
        import fsspec

        src_fs, src_root = fsspec.core.url_to_fs(str(source))
        if src_fs.isfile(src_root):  # a single-file artifact keeps its name inside dest
            self._copy_file(src_fs, src_root, _join(dest, posixpath.basename(src_root)))
            return
        if not src_fs.isdir(src_root):
            raise RegistryError(f"not found: {source}")
        for src in src_fs.find(src_root):
            rel = posixpath.relpath(src, src_root)
            self._copy_file(src_fs, src, _join(dest, rel))

    def _copy_file(self, src_fs: fsspec.AbstractFileSystem, src: str, dest: str) -> None:
        self.fs.makedirs(posixpath.dirname(dest), exist_ok=True)
        if not self.local:  # one PUT on close: the object is replaced whole
            with src_fs.open(src, "rb") as fin, self.fs.open(dest, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
            return
        # Written aside and renamed: a resumed registration rewriting a file that a concurrent
        # attempt already completed never shows a reader a truncated one.
        fd, tmp = tempfile.mkstemp(dir=posixpath.dirname(dest), prefix=".tmp-")
        os.fchmod(fd, 0o644)
        try:
            with src_fs.open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    # -- versions ------------------------------------------------------------------------------

    def _claimed_numbers(self, model_name: str) -> list[int]:
        base = _join(self._model_path(model_name), "versions")
        if not self.fs.exists(base):
            return []
        names = [posixpath.basename(p.rstrip("/")) for p in self.fs.ls(base, detail=False)]
        return sorted(int(n) for n in names if n.isdigit())

    def _claim_version(self, model_name: str) -> int:
        """Claim the next free version number by exclusive creation of its ``.claim`` file."""
        taken = self._claimed_numbers(model_name)
        n = (taken[-1] if taken else 0) + 1
        for _ in range(10_000):
            path = self._version_path(model_name, n)
            self.fs.makedirs(path, exist_ok=True)
            try:
                # Memory filesystems check-then-create; the process lock makes that atomic too.
                with (
                    self._process_lock(model_name),
                    self.fs.open(_join(path, CLAIM_FILE), "xb") as fh,
                ):
                    fh.write(utc_now().encode())
                return n
            except FileExistsError:
                n += 1
        raise RegistryError(f"could not claim a version number for {model_name}")

    @contextlib.contextmanager
    def _process_lock(self, model_name: str) -> Iterator[None]:
        key = f"claim:{self.fs.protocol}:{self._model_path(model_name)}"
        with _LOCKS_GUARD:
            lock = _LOCKS.setdefault(key, threading.Lock())
        with lock:
            yield

    def find_registration(self, model_name: str, idempotency_key: str) -> ModelVersion | None:
        """The complete version an earlier registration with this key made, if any.

        ``None`` also when that registration was interrupted: :meth:`register` with the same
        key then finishes it under its number.
        """
        version = self._registered_number(model_name, idempotency_key)
        if version is None:
            return None
        if not self.fs.exists(_join(self._version_path(model_name, version), LINEAGE_FILE)):
            return None
        return self.get(model_name, version)

    def _registered_number(self, model_name: str, key: str) -> int | None:
        try:
            raw = self._read_json(self._registration_path(model_name, key))
        except FileNotFoundError:
            return None
        except ValueError as err:  # an object store write is whole; a local one is linked whole
            raise RegistryError(
                f"registration record of {model_name} key {key} is corrupt"
            ) from err
        return int(raw["version"])

    def register(
        self,
        model_name: str,
        model_dir: str | Path,
        lineage: Lineage,
        evaluation: Mapping[str, Any],
        transform_dir: str | Path | None = None,
        schema_path: str | Path | None = None,
        statistics_dir: str | Path | None = None,
        idempotency_key: str | None = None,
    ) -> ModelVersion:
        """Copy a model and its artifacts into a new version.

        No alias moves here: call :meth:`set_alias` (push does, for blessed models only).

        Args:
            model_name: The registered model, e.g. ``flight-delay``.
            model_dir: The SavedModel directory (local path or fsspec URI).
            lineage: Its lineage record; ``schema_hash`` is filled from ``schema_path`` if unset.
            evaluation: The evaluation (JSON-ready), stored as ``evaluation.json``.
            transform_dir: The TFT transform graph directory, if any.
            schema_path: The TFDV schema file, if any.
            statistics_dir: The training data's TFDV statistics (validate's output), if any;
                later runs measure drift against the production version's statistics.
            idempotency_key: Shared by a retry and its first attempt, and by nothing else
                (8-128 letters, digits, ``-``, ``_``). A registration with a key that was
                registered before returns that version instead of a new one, and finishes it
                when the earlier attempt died before completing it.

        Returns:
            The new version, or the earlier one with the same ``idempotency_key``.

        Raises:
            RegistryError: A source does not exist, or the key is malformed.
        """
        import fsspec

        lineage = Lineage.from_dict(lineage.to_dict())  # a copy: the caller's record stays as is
        # Check the sources before claiming a number, so a typo does not burn a version.
        for source in (model_dir, transform_dir, schema_path):
            if source is not None and not _exists(source):
                raise RegistryError(f"cannot register {model_name}: {source} does not exist")
        version: int | None = None
        if idempotency_key is not None:
            self._registration_path(model_name, idempotency_key)  # checks the key's form
            lineage.idempotency_key = idempotency_key
            done = self.find_registration(model_name, idempotency_key)
            if done is not None:
                return done
            version = self._registered_number(model_name, idempotency_key)
        if version is None:
            version = self._claim_version(model_name)
            if idempotency_key is not None and not self._create_exclusive(
                self._registration_path(model_name, idempotency_key), {"version": version}
            ):
                # An attempt with the same key recorded its number between our look and our
                # claim: finish that one; the number just claimed stays unused, like any
                # interrupted registration's.
                version = self._registered_number(model_name, idempotency_key)
                assert version is not None  # the exclusive create just found the record
        path = self._version_path(model_name, version)
        self._copy_tree(model_dir, _join(path, MODEL_DIR))
        if transform_dir is not None:
            self._copy_tree(transform_dir, _join(path, TRANSFORM_GRAPH_DIR))
        if statistics_dir is not None:
            self._copy_tree(statistics_dir, _join(path, STATISTICS_DIR))
        if schema_path is not None:
            src_fs, src = fsspec.core.url_to_fs(str(schema_path))
            self._copy_file(src_fs, src, _join(path, SCHEMA_FILE))
            if lineage.schema_hash is None:
                lineage.schema_hash = file_hash(schema_path)
        self._write_json(_join(path, EVALUATION_FILE), dict(evaluation))
        lineage.events.append({"at": utc_now(), "kind": "registered", "details": {}})
        # Written last and exclusively: its presence marks the version complete, and an attempt
        # of the same registration that completed it first keeps its record (and any events
        # appended to it since).
        self._create_exclusive(_join(path, LINEAGE_FILE), lineage.to_dict())
        return self.get(model_name, version)

    def versions(self, model_name: str) -> list[ModelVersion]:
        """Every complete version of the model, oldest first."""
        aliases = self.aliases(model_name)
        out = []
        for n in self._claimed_numbers(model_name):
            path = self._version_path(model_name, n)
            if self.fs.exists(_join(path, LINEAGE_FILE)):
                out.append(self._load(model_name, n, aliases))
        return out

    def _load(self, model_name: str, version: int, aliases: Mapping[str, int]) -> ModelVersion:
        path = self._version_path(model_name, version)
        lineage = Lineage.from_dict(self._read_json(_join(path, LINEAGE_FILE)))
        names = tuple(sorted(a for a, v in aliases.items() if v == version))
        return ModelVersion(model_name, version, self._public(path), lineage, names)

    def get(self, model_name: str, version: int) -> ModelVersion:
        """One version.

        Raises:
            RegistryError: The version does not exist (or its registration never finished).
        """
        path = self._version_path(model_name, version)
        if not self.fs.exists(_join(path, LINEAGE_FILE)):
            known = [v.version for v in self.versions(model_name)]
            raise RegistryError(
                f"{model_name} has no version {version}; versions: {known or 'none'}"
            )
        return self._load(model_name, version, self.aliases(model_name))

    def latest(self, model_name: str) -> ModelVersion | None:
        """The newest complete version, or ``None`` for a model with no versions."""
        versions = self.versions(model_name)
        return versions[-1] if versions else None

    def lineage(self, model_name: str, version: int) -> Lineage:
        """The lineage record of a version."""
        return self.get(model_name, version).lineage

    def evaluation(self, model_name: str, version: int) -> dict[str, Any]:
        """The stored evaluation of a version."""
        self.get(model_name, version)
        path = self._version_path(model_name, version)
        result: dict[str, Any] = self._read_json(_join(path, EVALUATION_FILE))
        return result

    def download(self, model_name: str, version: int, dest: Path) -> Path:
        """Copy a version's SavedModel to a local directory and return that directory."""
        self.get(model_name, version)
        return download_tree(
            self.fs, _join(self._version_path(model_name, version), MODEL_DIR), dest
        )

    # -- aliases -------------------------------------------------------------------------------

    def aliases(self, model_name: str) -> dict[str, int]:
        """Alias name -> version number."""
        path = _join(self._model_path(model_name), ALIASES_FILE)
        if not self.fs.exists(path):
            return {}
        return {str(k): int(v) for k, v in self._read_json(path).items()}

    def set_alias(
        self,
        model_name: str,
        alias: str,
        version: int,
        reason: str = "",
        if_changed: bool = False,
    ) -> bool:
        """Point ``alias`` at ``version`` and record the move in the version's lineage.

        The move and its ``alias_set`` event happen under one lock, event first: concurrent
        movers (other processes and pods included) each see the previous mover's version, and a
        crash in between leaves an event whose move a retry repeats, never a move without one.

        Args:
            model_name: The registered model.
            alias: The alias, e.g. ``candidate``.
            version: The version it should point at.
            reason: Why, recorded in the event.
            if_changed: Do nothing (and record nothing) when the alias already points at
                ``version``: what a retried step wants.

        Returns:
            Whether the alias was moved (always ``True`` unless ``if_changed``).

        Raises:
            RegistryError: The version does not exist or the alias name is a number.
            UnblessedVersionError: A protected alias (``production``) would point at a version
                the evaluator did not bless.
        """
        if not alias or alias.isdigit() or alias == "latest":
            raise RegistryError(f"invalid alias name {alias!r}")
        target = self.get(model_name, version)
        if alias in PROTECTED_ALIASES and not target.lineage.blessed:
            raise UnblessedVersionError(
                f"refusing to point {alias!r} at {model_name} version {version}: it is not "
                f"blessed ({'; '.join(target.lineage.blessing_reasons) or 'no reasons recorded'})"
            )
        with self._lock(model_name):
            current = self.aliases(model_name)
            previous = current.get(alias)
            if if_changed and previous == int(version):
                return False
            details: dict[str, Any] = {"alias": alias, "previous_version": previous}
            if reason:
                details["reason"] = reason
            self._append_event_locked(model_name, version, "alias_set", details)
            current[alias] = int(version)
            self._write_json(_join(self._model_path(model_name), ALIASES_FILE), current)
        return True

    def remove_alias(self, model_name: str, alias: str) -> None:
        """Remove an alias (no-op when absent). ``production`` can be moved, never removed.

        Raises:
            RegistryError: The alias is protected.
        """
        if alias in PROTECTED_ALIASES:
            raise RegistryError(f"alias {alias!r} can be moved but not removed")
        with self._lock(model_name):
            current = self.aliases(model_name)
            if current.pop(alias, None) is not None:
                self._write_json(_join(self._model_path(model_name), ALIASES_FILE), current)

    def resolve(self, model_name: str, alias_or_version: str | int) -> ModelVersion:
        """A version by number (``3``, ``"3"``), alias (``"production"``) or ``"latest"``.

        Raises:
            RegistryError: No such version or alias.
        """
        ref = str(alias_or_version)
        if ref.isdigit():
            return self.get(model_name, int(ref))
        if ref == "latest":
            newest = self.latest(model_name)
            if newest is None:
                raise RegistryError(f"{model_name} has no versions")
            return newest
        aliases = self.aliases(model_name)
        if ref not in aliases:
            known = ", ".join(sorted(aliases)) or "none"
            raise RegistryError(f"{model_name} has no alias {ref!r}; aliases: {known}")
        return self.get(model_name, aliases[ref])

    def find(self, model_name: str, alias: str) -> ModelVersion | None:
        """The version an alias points at, or ``None`` when the alias is not set."""
        version = self.aliases(model_name).get(alias)
        return None if version is None else self.get(model_name, version)

    def production_statistics(self, model_name: str) -> str | None:
        """The production version's training statistics (validation's drift baseline, the
        monitor's skew reference), or ``None`` when no version is in production."""
        production = self.find(model_name, PRODUCTION)
        return None if production is None else production.statistics_uri

    # -- events --------------------------------------------------------------------------------

    def record_event(
        self, model_name: str, version: int, kind: str, details: Mapping[str, Any] | None = None
    ) -> Lineage:
        """Append a deployment-state event (e.g. ``canary_started``, ``promoted``,
        ``rolled_back``) to a version's lineage and return the updated lineage."""
        with self._lock(model_name):
            return self._append_event_locked(model_name, version, kind, details)

    def _append_event_locked(
        self, model_name: str, version: int, kind: str, details: Mapping[str, Any] | None
    ) -> Lineage:
        path = _join(self._version_path(model_name, version), LINEAGE_FILE)
        if not self.fs.exists(path):
            raise RegistryError(f"{model_name} has no version {version}")
        lineage = Lineage.from_dict(self._read_json(path))
        lineage.events.append({"at": utc_now(), "kind": kind, "details": dict(details or {})})
        self._write_json(path, lineage.to_dict())
        return lineage


# -- CLI ---------------------------------------------------------------------------------------


def add_models_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``mlops models list|show`` to the CLI's subparsers."""
    p = sub.add_parser("models", help="list and inspect registered model versions")
    p.add_argument("--registry", default=None, help=f"registry URI (default {DEFAULT_REGISTRY})")
    p.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="registered model name")
    models_sub = p.add_subparsers(dest="models_command", required=True)
    models_sub.add_parser("list", help="table of versions, their spans, AUC, blessing, aliases")
    show = models_sub.add_parser("show", help="lineage and evaluation summary of one version")
    show.add_argument("ref", help="version number, alias (production, candidate) or latest")
    show.add_argument("--json", action="store_true", help="print lineage and evaluation as JSON")


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "-" if value is None else str(value)


def format_versions(versions: list[ModelVersion]) -> str:
    """The ``mlops models list`` table."""
    header = ("VERSION", "CREATED", "SPANS", "AUC", "BLESSED", "ALIASES")
    rows = [header]
    for v in versions:
        spans = v.lineage.spans
        span = f"{spans[0]}..{spans[-1]}" if len(spans) > 1 else (spans[0] if spans else "-")
        rows.append(
            (
                str(v.version),
                v.lineage.created_at,
                span,
                _fmt(v.lineage.metrics.get("auc")),
                "yes" if v.lineage.blessed else "no",
                ",".join(v.aliases) or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def format_version(v: ModelVersion, evaluation: Mapping[str, Any]) -> str:
    """The ``mlops models show`` text: lineage, blessing and evaluation summary."""
    lines = [
        f"{v.model_name} version {v.version}  aliases: {', '.join(v.aliases) or '-'}",
        f"uri:    {v.uri}",
        v.lineage.describe(),
        "metrics: " + ", ".join(f"{k}={_fmt(val)}" for k, val in sorted(v.lineage.metrics.items())),
        "reasons:",
        *[f"  - {r}" for r in v.lineage.blessing_reasons],
    ]
    regressed = evaluation.get("regressed_slices") or []
    if regressed:
        lines.append(f"regressed slices: {', '.join(regressed)}")
    if v.lineage.events:
        lines.append("events:")
        for e in v.lineage.events:
            detail = json.dumps(e.get("details", {}), sort_keys=True)
            lines.append(f"  {e.get('at')}  {e.get('kind')}  {detail}")
    return "\n".join(lines)


def cli_models(args: argparse.Namespace, default_registry: str = DEFAULT_REGISTRY) -> int:
    """Run ``mlops models list|show``; returns the exit code."""
    registry = ModelRegistry(args.registry or default_registry)
    try:
        if args.models_command == "list":
            versions = registry.versions(args.model_name)
            if not versions:
                print(f"no versions of {args.model_name} in {registry.uri}")
                return 0
            print(format_versions(versions))
            return 0
        v = registry.resolve(args.model_name, args.ref)
        evaluation = registry.evaluation(args.model_name, v.version)
        if args.json:
            print(
                json.dumps(
                    {"version": v.version, "uri": v.uri, "aliases": list(v.aliases),
                     "lineage": v.lineage.to_dict(), "evaluation": evaluation},
                    indent=2,
                )
            )  # fmt: skip
        else:
            print(format_version(v, evaluation))
        return 0
    except RegistryError as err:
        print(f"mlops models: error: {err}", file=sys.stderr)
        return 2
