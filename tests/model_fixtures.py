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

from mlops import features as F


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
