"""Core of the validation gate: read a verdict JSON and decide whether the run goes on."""

from __future__ import annotations

import json
from pathlib import Path

from mlops.artifacts import VERDICT_FILE


class InvalidDataError(RuntimeError):
    """The span failed validation; the message lists each anomaly."""


def read_verdict(path: Path) -> dict:
    """Load a verdict written by the validate component (a file, or a directory holding one)."""
    if path.is_dir():
        path = path / VERDICT_FILE
    return json.loads(path.read_text())


def check_verdict(path: Path, stop_on_invalid_data: bool = True) -> bool:
    """Return whether the data passed; raise :class:`InvalidDataError` if not and asked to stop."""
    verdict = read_verdict(path)
    ok = bool(verdict.get("ok"))
    if not ok and stop_on_invalid_data:
        lines = []
        for a in verdict.get("anomalies", []):
            if isinstance(a, dict):
                lines.append(f"  - {a.get('feature', '?')}: {a.get('description', a)}")
            else:
                lines.append(f"  - {a}")
        raise InvalidDataError(
            "data validation failed; the run stops before transform and training, and the "
            "production model is untouched:\n" + "\n".join(lines or ["  (no anomaly details)"])
        )
    return ok
