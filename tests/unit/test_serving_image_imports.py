"""The serving image installs only what serving imports: the modules it runs must import there.

``images/serving.Dockerfile`` installs TensorFlow, KServe and a few small packages, not the
training stack. A base module that imports one of those at module level (the registry imports
fsspec) breaks the image's servers while every test in the full environment passes; this test
imports them with the training stack hidden, in a child process so this one is untouched.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
# In requirements.lock, not in the serving image (SERVING_PACKAGES of images/serving.Dockerfile).
ABSENT = ("fsspec", "apache_beam", "tensorflow_data_validation", "tensorflow_transform", "feast",
          "kfp")  # fmt: skip
# What the chart's pods run: `python -m serving.transformer` and `python -m serving.predictor`.
SERVED = ("serving.transformer", "serving.predictor")


def test_the_servers_import_without_the_training_stack() -> None:
    hide = "; ".join(f"sys.modules[{name!r}] = None" for name in ABSENT)
    code = f"import sys; {hide}; " + "; ".join(f"import {m}" for m in SERVED)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_packaged_schema_is_what_serving_validates_against() -> None:
    """The curated schema ships with the code, so the image needs no ``components/`` copy."""
    from mlops.artifacts import packaged_schema
    from serving.validation import load_schema

    assert packaged_schema().is_file()
    schema = load_schema()
    assert schema.source == str(packaged_schema())
    assert "UA" in schema.vocabularies["carrier"] and "EWR" in schema.vocabularies["origin"]
