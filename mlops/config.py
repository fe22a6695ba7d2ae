"""Typed platform configuration: one object from YAML, overridden only at the entry point."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_CONFIG_FILE = "mlops.yaml"
SPAN_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"


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
