"""Small real SavedModels that follow the serving contract, for tests of evaluate and serving.

The serving contract (the trainer exports the same): ``signatures["serving_default"]`` takes one
tensor per name in ``mlops.features.FEATURE_NAMES``, shape ``[None]``, ``tf.float32`` for numeric
features (NaN = missing) and ``tf.string`` for categorical ones (``b""`` = missing), and returns
``{"score": tf.float32 [None]}``, the probability that the flight is delayed.

These fixtures are hand-weighted logistic models, not trained ones: tests use them where the
behaviour under test is the plumbing (scoring, registry, serving), not model quality.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mlops import features as F

if TYPE_CHECKING:
    from mlops.registry import ModelRegistry


def export_logistic_model(
    path: Path,
    hour_weight: float = 0.12,
    delay_rate_weight: float = 4.0,
    bias: float = -3.0,
    carrier_bonus: dict[str, float] | None = None,
) -> Path:
    """Export a logistic SavedModel over a few raw features with the serving signature.

    Args:
        path: Directory to write the SavedModel into.
        hour_weight: Weight of the scheduled departure hour (later flights are later).
        delay_rate_weight: Weight of the carrier's recent delay rate (missing counts as 0.2).
        bias: Intercept.
        carrier_bonus: Extra logit per carrier code; lets a test make one slice worse.
    """
    import tensorflow as tf

    bonus = carrier_bonus or {}
    keys = tf.constant(list(bonus) or ["__none__"])
    values = tf.constant(list(bonus.values()) or [0.0], dtype=tf.float32)

    specs = {
        name: tf.TensorSpec([None], tf.float32 if name in F.NUMERIC_FEATURES else tf.string, name)
        for name in F.FEATURE_NAMES
    }

    class Logistic(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(keys, values), default_value=0.0
            )

        @tf.function(input_signature=[specs])
        def serve(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            rate = inputs["carrier_delay_rate_7d"]
            rate = tf.where(tf.math.is_nan(rate), tf.constant(0.2), rate)
            logit = (
                bias
                + hour_weight * inputs["sched_dep_hour"]
                + delay_rate_weight * rate
                + self.table.lookup(inputs[F.CARRIER])
            )
            return {"score": tf.sigmoid(logit)}

    module = Logistic()

    @tf.function(input_signature=list(specs.values()))
    def serving_default(*args: tf.Tensor) -> dict[str, tf.Tensor]:
        return module.serve(dict(zip(specs, args, strict=True)))

    tf.saved_model.save(module, str(path), signatures={"serving_default": serving_default})
    return path


def rollout_versions(work: Path, model_name: str) -> tuple[ModelRegistry, dict[str, int]]:
    """A registry with a ``stable`` production version and two candidates: ``good`` (a small
    retrain-like change) and ``bad`` (passed offline evaluation, but United flights' scores jump
    online)."""
    from mlops.registry import Lineage, ModelRegistry

    registry = ModelRegistry(str(work / "registry"))
    models = {
        "stable": export_logistic_model(work / "m-stable"),
        "good": export_logistic_model(work / "m-good", hour_weight=0.121),
        "bad": export_logistic_model(work / "m-bad", carrier_bonus={"UA": 3.0}),
    }
    versions = {}
    for name, path in models.items():
        lineage = Lineage(spans=["2013-01"], blessed=True, blessing_reasons=["test fixture"])
        versions[name] = registry.register(model_name, path, lineage, {"fixture": name}).version
    registry.set_alias(model_name, "production", versions["stable"])
    return registry, versions
