"""The TFT ``preprocessing_fn``, built from the feature contract, and its serving adapter.

Raw features enter as ``VarLenFeature`` (a missing value is an empty list), so one raw form
serves training (parquet rows, nulls allowed) and serving (dense tensors with NaN / ``b""`` for a
missing value, turned into the same sparse form by :func:`raw_dense_to_tft_inputs`).

Transformations:
- numerics: z-scored with the mean and variance of the present training values; a missing
  value becomes 0.0 (the mean); a 0/1 indicator of missingness for the features that are often
  missing;
- categoricals: vocabulary over the training data (missing is its own token), one OOV bucket;
- crosses: carrier x origin (a carrier's delays differ by airport), and the scheduled hour in
  quantile buckets (delays build up over the day, not linearly).
"""

from __future__ import annotations

from typing import Any

from mlops import features as F

# Features missing often enough in the data for missingness itself to carry signal.
MISSING_INDICATORS = ("wind_gust", "pressure", "plane_year", "carrier_delay_rate_7d")
CROSSES = ((F.CARRIER, F.ORIGIN),)
HOUR_BUCKETS = 8
VOCAB_TOP_K = 500
OOV_BUCKETS = 1


def xf(name: str) -> str:
    """Name of a transformed feature."""
    return f"{name}_xf"


def raw_feature_spec() -> dict[str, Any]:
    """The raw feature spec: every feature VarLen (nullable), the label a fixed int64."""
    import tensorflow as tf

    spec: dict[str, Any] = {
        name: tf.io.VarLenFeature(tf.float32 if name in F.NUMERIC_FEATURES else tf.string)
        for name in F.FEATURE_NAMES
    }
    spec[F.LABEL] = tf.io.FixedLenFeature([], tf.int64)
    return spec


def _dense(x: Any, default: Any) -> Any:
    """A [batch, 0-or-1] SparseTensor as a [batch] dense tensor, ``default`` where missing."""
    import tensorflow as tf

    if not isinstance(x, tf.SparseTensor):
        return x
    return tf.squeeze(
        tf.sparse.to_dense(
            tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1]), default_value=default
        ),
        axis=1,
    )


def _present(x: Any) -> Any:
    """1.0 where a [batch, 0-or-1] SparseTensor has a value, else 0.0."""
    import tensorflow as tf

    ones = tf.SparseTensor(x.indices, tf.ones_like(x.values, tf.float32), x.dense_shape)
    return _dense(ones, 0.0)


def preprocessing_fn(inputs: dict[str, Any]) -> dict[str, Any]:
    """TFT preprocessing: raw features (sparse) -> model inputs ``<name>_xf`` and the label."""
    import tensorflow as tf
    import tensorflow_transform as tft

    out: dict[str, Any] = {}
    for name in F.NUMERIC_FEATURES:
        raw = inputs[name]
        # z-scores of the present values (mean and variance over them only), then 0.0 (the
        # mean) where missing. Imputing before scaling would make the variance depend on a first
        # analysis pass (the mean), costing a second pass over the data.
        out[xf(name)] = _dense(tft.scale_to_z_score(raw, name=f"zscore_{name}"), 0.0)
        if name in MISSING_INDICATORS:
            out[xf(f"{name}_missing")] = 1.0 - _present(raw)
    for name in F.CATEGORICAL_FEATURES:
        value = _dense(inputs[name], F.MISSING_CATEGORY)
        out[xf(name)] = tft.compute_and_apply_vocabulary(
            value, top_k=VOCAB_TOP_K, num_oov_buckets=OOV_BUCKETS, vocab_filename=name
        )
    for a, b in CROSSES:
        joined = tf.strings.join(
            [_dense(inputs[a], F.MISSING_CATEGORY), _dense(inputs[b], F.MISSING_CATEGORY)], "|"
        )
        out[xf(f"{a}_x_{b}")] = tft.compute_and_apply_vocabulary(
            joined, top_k=VOCAB_TOP_K, num_oov_buckets=OOV_BUCKETS, vocab_filename=f"{a}_x_{b}"
        )
    hour = _dense(inputs["sched_dep_hour"], 12.0)
    out[xf("sched_dep_hour_bucket")] = tft.bucketize(hour, HOUR_BUCKETS)
    out[F.LABEL] = inputs[F.LABEL]
    return out


def raw_dense_to_tft_inputs(raw: dict[str, Any]) -> dict[str, Any]:
    """Turn dense serving tensors into the raw form the TFT layer expects.

    Args:
        raw: One ``[batch]`` tensor per name in ``FEATURE_NAMES``: float32 with NaN for a
            missing numeric, string with ``b""`` for a missing category.

    Returns:
        ``[batch, 0-or-1]`` SparseTensors, exactly as the training rows were parsed.
    """
    import tensorflow as tf

    out = {}
    for name in F.FEATURE_NAMES:
        x = raw[name]
        present = tf.logical_not(tf.math.is_nan(x)) if x.dtype.is_floating else tf.not_equal(x, b"")
        rows = tf.where(present)
        indices = tf.concat([rows, tf.zeros_like(rows)], axis=1)
        batch = tf.shape(x, out_type=tf.int64)[0]
        out[name] = tf.SparseTensor(indices, tf.boolean_mask(x, present), [batch, 1])
    return out
