"""The blessing's thresholds: :class:`EvalConfig`, the one home of the gate's defaults.

The evaluate component's parameters and the training pipeline's parameters take their defaults
from here. This module imports the standard library and the feature contract only, so compiling
a pipeline that reads it stays free of NumPy, pandas and TensorFlow.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

from mlops.features import DECISION_THRESHOLD

_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True)
class EvalConfig:
    """Thresholds of the blessing.

    Attributes:
        threshold: Decision threshold for accuracy, precision, recall and the confusion matrix.
        min_auc: First model only: the overall AUC it must reach.
        max_log_loss: First model only: the overall log loss it must stay under (ln 2 = 0.693
            is a coin flip).
        max_calibration_error: First model only, optional: the highest expected calibration
            error accepted.
        max_auc_drop: With a baseline: the largest overall AUC drop accepted.
        max_log_loss_increase: With a baseline: the largest overall log loss increase accepted.
        max_slice_auc_drop: With a baseline: the largest AUC drop accepted in a slice.
        max_slice_log_loss_increase: With a baseline: the largest log loss increase accepted in
            a slice. AUC ranks within a slice only; this catches a model whose probabilities for
            a whole slice went wrong (e.g. every flight of one carrier scored as delayed).
        slice_max_auc_drop: Per-slice overrides of ``max_slice_auc_drop``, keyed ``"key"`` (all
            slices of a key) or ``"key=value"`` (one slice); the most specific wins.
        min_slice_count: Slices with fewer examples are reported but do not gate.
    """

    threshold: float = DECISION_THRESHOLD
    min_auc: float = 0.6
    max_log_loss: float = 0.69
    max_calibration_error: float | None = None
    max_auc_drop: float = 0.01
    max_log_loss_increase: float = 0.02
    max_slice_auc_drop: float = 0.05
    max_slice_log_loss_increase: float = 0.05
    slice_max_auc_drop: Mapping[str, float] = field(default_factory=dict)
    min_slice_count: int = 200

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        bounds = (self.max_auc_drop, self.max_slice_auc_drop, self.max_log_loss_increase,
                  self.max_slice_log_loss_increase)  # fmt: skip
        if min(bounds) < 0:
            raise ValueError("allowed AUC drops and log loss increases must be >= 0")
        if self.min_slice_count < 1:
            raise ValueError(f"min_slice_count must be >= 1, got {self.min_slice_count}")

    def slice_drop(self, key: str, value: str) -> float:
        """The AUC drop allowed in slice ``key=value``."""
        for ref in (f"{key}={value}", key):
            if ref in self.slice_max_auc_drop:
                return float(self.slice_max_auc_drop[ref])
        return self.max_slice_auc_drop

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        out = asdict(self)
        out["slice_max_auc_drop"] = dict(self.slice_max_auc_drop)
        return out


# The defaults, for the pipeline's parameters (``GATE_DEFAULTS.min_auc``, ...).
GATE_DEFAULTS = EvalConfig()


def with_gate_defaults(fn: _F) -> _F:
    """Give a component function's trailing ``EvalConfig`` parameters their defaults.

    KFP embeds a lightweight component's source text in the compiled pipeline and runs it in
    the container, where a default written as ``= GATE_DEFAULTS.min_auc`` would not resolve.
    The component therefore declares its gate parameters without defaults and this decorator
    (applied under ``@dsl.component``) attaches ``GATE_DEFAULTS``'s values, which KFP reads into
    the component spec.

    Raises:
        TypeError: A parameter named after an ``EvalConfig`` field is not in the trailing run.
    """
    names = {f.name for f in fields(EvalConfig)}
    params = list(inspect.signature(fn).parameters)
    trailing = len(params)
    while trailing > 0 and params[trailing - 1] in names:
        trailing -= 1
    misplaced = [p for p in params[:trailing] if p in names]
    if misplaced:
        raise TypeError(f"{fn.__name__}: gate parameters must come last: {', '.join(misplaced)}")
    fn.__defaults__ = tuple(_literal(getattr(GATE_DEFAULTS, p)) for p in params[trailing:])
    return fn


def _literal(value: Any) -> Any:
    # KFP parameters are JSON values: a Mapping field becomes a plain dict.
    return dict(value) if isinstance(value, Mapping) else value
