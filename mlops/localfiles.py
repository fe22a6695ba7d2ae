"""Crash- and race-safe writes of small local files: the registry's JSON and the retrain ledger.

Readers of a file written here see the old content or the new, never a partial file; a lock
taken here is shared by every process on the host (and on POSIX shared filesystems).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator


def write_aside(
    directory: str, data: bytes, prefix: str = ".tmp-", mode: int | None = 0o644
) -> str:
    """Write ``data`` to a new temporary file in ``directory``, on disk (fsync); return its path.

    The caller moves it into place (``os.replace``, ``os.link``) and removes it if that fails.

    Args:
        directory: Where the file goes (created if missing): the destination's directory, so
            the move is a rename within one filesystem.
        data: The whole content.
        prefix: Temporary name prefix.
        mode: Permission bits; ``None`` keeps ``mkstemp``'s owner-only 0600.
    """
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix)
    try:
        if mode is not None:
            os.fchmod(fd, mode)  # mkstemp makes 0600; servers and other users read these
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            # On disk before the move: a power loss must not leave an empty file in place.
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def replace_atomically(
    path: str, data: bytes, prefix: str = ".tmp-", mode: int | None = 0o644
) -> None:
    """Replace ``path``'s content with ``data``: written aside, then renamed over it."""
    tmp = write_aside(os.path.dirname(path) or ".", data, prefix, mode)
    try:
        os.replace(tmp, path)  # atomic rename on POSIX
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def exclusive_lock(lock_path: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created if missing) for the block.

    The kernel drops the lock when its holder dies: no stale locks to break.
    """
    import fcntl  # POSIX only; the local registry and the ledger live on POSIX filesystems

    os.makedirs(os.path.dirname(lock_path) or ".", exist_ok=True)
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
