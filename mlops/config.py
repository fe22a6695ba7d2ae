"""Typed platform configuration: one object from YAML, overridden only at the entry point."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlops.features import DECISION_THRESHOLD

DEFAULT_CONFIG_FILE = "mlops.yaml"
SPAN_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"
# The registered model's name: the registry's, serving's and the rollout's default.
DEFAULT_MODEL_NAME = "flight-delay"
DEFAULT_REQUEST_LOG = "runs/serving/requests.jsonl"
DEFAULT_PROMETHEUS_URL = "http://127.0.0.1:9090"


class PlatformConfig(BaseModel):
    """Settings of a local (embedded) installation.

    Paths are relative to the directory the CLI runs in unless absolute.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    feature_repo: Path = Field(Path("feature_repo"), description="The Feast repository.")
    runs_dir: Path = Field(Path("runs"), description="Local pipeline runs and their artifacts.")
    registry_uri: str = Field("registry", description="Model registry: a directory or fsspec URI.")
    first_span: str = Field("2013-01", pattern=SPAN_PATTERN, description="First span to train on.")
    last_span: str = Field("2013-02", pattern=SPAN_PATTERN, description="Last span to train on.")
    eval_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="Share of the window held out.")
    validation_fraction: float = Field(
        0.1, gt=0.0, lt=1.0, description="Share of the window, before eval, to tune on."
    )
    train_workers: int = Field(
        1, ge=1, description="Training workers; above 1 a TFJob (cluster) or loopback processes."
    )
    model_name: str = Field(DEFAULT_MODEL_NAME, description="Registered model name.")
    request_log: str = Field(
        DEFAULT_REQUEST_LOG, description="Serving request log: a path or fsspec URI (.jsonl)."
    )
    prometheus_url: str = Field(DEFAULT_PROMETHEUS_URL, description="Prometheus API base URL.")
    decision_threshold: float = Field(
        DECISION_THRESHOLD, gt=0.0, lt=1.0, description="Score at which a flight is 'delayed'."
    )

    @field_validator("last_span")
    @classmethod
    def _ordered(cls, last: str, info: object) -> str:
        first = getattr(info, "data", {}).get("first_span")
        if first is not None and last < first:
            raise ValueError(f"last_span {last} precedes first_span {first}")
        return last

    @property
    def data_dir(self) -> Path:
        """Where the prepared Feast sources live."""
        return self.feature_repo / "data"


def load_config(path: Path | None = None) -> PlatformConfig:
    """Load the config from ``path``, or from ``./mlops.yaml`` if it exists, else defaults.

    Raises:
        FileNotFoundError: ``path`` was given and does not exist.
        pydantic.ValidationError: The file holds an unknown key or a bad value.
    """
    if path is None:
        path = Path(DEFAULT_CONFIG_FILE)
        if not path.is_file():
            return PlatformConfig()
    with path.open() as fh:
        raw = yaml.safe_load(fh) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
    return PlatformConfig(**raw)
