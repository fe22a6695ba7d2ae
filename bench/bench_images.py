"""Image build time and size: both images built from scratch with podman (no layer cache).

``tools/build-images.sh`` with ``NO_CACHE=1`` builds ``images/components.Dockerfile`` and
``images/serving.Dockerfile`` on the local bookworm base (``tools/install-podman.sh``), with the
host's CA bundle mounted for the package downloads. Sizes are podman's uncompressed image sizes;
the base image's size is the baseline both start from. Build times include downloading every
wheel of requirements.lock from PyPI, so they depend on the network as much as on this machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run() -> dict[str, float | str]:
    """Build both images without cache; return build seconds and sizes."""
    with tempfile.TemporaryDirectory() as tmp:
        timings = Path(tmp) / "images.json"
        env = {**os.environ, "NO_CACHE": "1", "TIMINGS": str(timings)}
        subprocess.run(["bash", str(ROOT / "tools" / "build-images.sh")], check=True, env=env)
        built = json.loads(timings.read_text())
    base = subprocess.run(
        ["bash", str(ROOT / "tools" / "install-podman.sh")], check=True, capture_output=True,
        text=True,
    ).stdout.split()[-1]  # fmt: skip
    base_bytes = int(subprocess.run(["podman", "image", "inspect", "--format", "{{.Size}}", base],
                                    check=True, capture_output=True, text=True).stdout)  # fmt: skip
    figures: dict[str, float | str] = {
        "base_image": base,
        "base_size_mb": round(base_bytes / 1e6, 1),
    }
    for name, image in built.items():
        figures[f"{name}_build_s"] = round(float(image["build_seconds"]), 1)
        figures[f"{name}_size_mb"] = round(image["size_bytes"] / 1e6, 1)
        figures[f"{name}_size_vs_base"] = round(image["size_bytes"] / base_bytes, 2)
    return figures
