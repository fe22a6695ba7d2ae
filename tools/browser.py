"""Headless Chromium helpers: render a local HTML page to its DOM or to a PNG screenshot."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

# Flags for a closed network: no background fetches, no first-run work, no GPU.
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip


def chromium() -> str:
    """Path of the Chromium binary; raises if it is not installed (tools/install-chromium.sh)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise FileNotFoundError("chromium not found; run tools/install-chromium.sh")
    return exe


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=timeout, check=True,
        )  # fmt: skip


def dump_dom(page: Path, timeout: float = 60) -> str:
    """The DOM of ``page`` after Chromium has loaded it."""
    return _run(["--dump-dom", page.resolve().as_uri()], timeout).stdout


def screenshot(page: Path, out: Path, size: str = "1280,2400", timeout: float = 60) -> Path:
    """Write a PNG screenshot of ``page`` to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _run(
        [f"--screenshot={out.resolve()}", f"--window-size={size}", page.resolve().as_uri()], timeout
    )
    return out
