"""TFDV validation and the TFT transform on real spans (one module: TF is imported once)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops import features as F

pytestmark = pytest.mark.integration

TrainingSet = Callable[[str, str], tuple[pd.DataFrame, pd.DataFrame]]


def write(df: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    return path


def test_normal_month_validates_clean(training_set: TrainingSet, tmp_path: Path) -> None:
    from components.validate.core import validate

    train, evaluation = training_set("2013-01", "2013-01")
    verdict = validate([write(train, tmp_path / "t.parquet"), write(evaluation, tmp_path / "e")],
                       tmp_path / "out")  # fmt: skip
    assert verdict.ok, verdict.report_markdown()
    assert verdict.rows == len(train) + len(evaluation)
    for name in ("statistics.pb", "anomalies.pbtxt", "verdict.json", "statistics.html",
                 "report.md", "schema.pbtxt"):  # fmt: skip
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert "temp" in (tmp_path / "out" / "statistics.html").read_text()


def test_injected_faults_are_each_named(training_set: TrainingSet, tmp_path: Path) -> None:
    from components.validate.core import validate

    train, _ = training_set("2013-01", "2013-01")
    bad = train.copy()
    bad.loc[bad.index[:500], F.CARRIER] = "ZZ"  # a new category
    bad = bad.drop(columns=["visib"])  # a missing column
    bad["plane_seats"] = bad["plane_seats"].map(lambda v: None if pd.isna(v) else f"{v:.0f}")
    bad["distance"] = bad["distance"] * 100.0  # a numeric shift far past the range
    bad["humid"] = np.nan  # a column of nulls
    verdict = validate(write(bad, tmp_path / "bad.parquet"), tmp_path / "out")
    assert not verdict.ok
    named = {a.feature: a.description for a in verdict.anomalies}
    assert set(named) >= {F.CARRIER, "visib", "plane_seats", "distance", "humid"}, named
    assert "ZZ" in named[F.CARRIER]
    report = (tmp_path / "out" / "report.md").read_text()
    assert report.startswith("# Data validation: FAILED")
    for feature in (F.CARRIER, "visib", "plane_seats", "distance", "humid"):
        assert f"| {feature} |" in report


def test_drift_winter_vs_summer_is_measured_per_feature(
    training_set: TrainingSet, tmp_path: Path
) -> None:
    from components.validate.core import STATS_FILE, validate

    jan, _ = training_set("2013-01", "2013-01")
    feb, _ = training_set("2013-02", "2013-02")
    jul, _ = training_set("2013-07", "2013-07")
    base = validate(write(jan, tmp_path / "jan.parquet"), tmp_path / "jan")
    stats = tmp_path / "jan" / STATS_FILE
    next_month = validate(write(feb, tmp_path / "feb.parquet"), tmp_path / "feb",
                          previous_stats_path=stats)  # fmt: skip
    summer = validate(write(jul, tmp_path / "jul.parquet"), tmp_path / "jul",
                      previous_stats_path=stats)  # fmt: skip
    assert base.ok and next_month.ok and summer.ok  # drift is reported, not blocking
    assert next_month.drifted == []  # a normal next month stays under every threshold
    assert "temp" in summer.drifted and "dewp" in summer.drifted
    assert summer.drift["temp"] > 2 * next_month.drift["temp"]
    numeric = [n for n in F.NUMERIC_FEATURES if n != "month"]
    assert set(summer.drift) >= set(numeric) | set(F.CATEGORICAL_FEATURES)
    assert "| temp |" in (tmp_path / "jul" / "report.md").read_text()


@pytest.fixture(scope="module")
def transformed(training_set: TrainingSet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from components.transform.core import transform

    train, evaluation = training_set("2013-01", "2013-01")
    out = tmp_path_factory.mktemp("xf")
    transform(write(train, out / "in" / "train.parquet"),
              write(evaluation, out / "in" / "validation.parquet"), out / "graph",
              out / "examples")  # fmt: skip
    return out


def raw_dense(df: pd.DataFrame) -> dict:
    import tensorflow as tf

    out = {}
    for name in F.FEATURE_NAMES:
        if name in F.NUMERIC_FEATURES:
            out[name] = tf.constant(df[name].astype("float32").to_numpy())
        else:
            out[name] = tf.constant([b"" if v is None or v != v else str(v).encode()
                                     for v in df[name]])  # fmt: skip
    return out


def test_serving_transform_equals_training_examples(
    transformed: Path, training_set: TrainingSet
) -> None:
    import tensorflow as tf
    import tensorflow_transform as tft

    from components.transform.core import load_transformed_dataset

    _, evaluation = training_set("2013-01", "2013-01")
    tft_output = tft.TFTransformOutput(str(transformed / "graph"))
    served = tft_output.transform_features_layer()(raw_dense(evaluation))
    names = sorted(k for k in tft_output.transformed_feature_spec() if k != F.LABEL)
    batches = list(
        load_transformed_dataset(transformed / "graph", transformed / "examples", "validation",
                                 100_000, False, 0)
    )  # fmt: skip
    assert len(batches) == 1
    trained, labels = batches[0]

    def rows(feats: dict) -> np.ndarray:
        cols = [tf.cast(tf.reshape(feats[n], [-1]), tf.float64).numpy() for n in names]
        matrix = np.stack(cols, axis=1)
        return matrix[np.lexsort(matrix.T[::-1])]

    a, b = rows(trained), rows(served)
    assert a.shape == (len(evaluation), len(names))
    np.testing.assert_array_equal(a, b)  # exactly the same values, row for row
    assert int(tf.reduce_sum(labels)) == int(evaluation[F.LABEL].sum())
    # OOV and missing values take their own buckets rather than failing.
    odd = evaluation.head(2).copy()
    odd[F.CARRIER] = ["QQ", None]
    odd["temp"] = [np.nan, 50.0]
    odd["wind_gust"] = [np.nan, 20.0]
    out = tft_output.transform_features_layer()(raw_dense(odd))
    vocab = tft_output.vocabulary_size_by_name(F.CARRIER)
    assert int(out["carrier_xf"][0]) == vocab  # the OOV bucket
    # A missing carrier becomes the missing token, which January never had: the OOV bucket too.
    assert F.MISSING_CATEGORY not in tft_output.vocabulary_by_name(F.CARRIER)
    assert int(out["carrier_xf"][1]) == vocab
    assert out["wind_gust_missing_xf"].numpy().tolist() == [1.0, 0.0]
    assert np.isfinite(out["temp_xf"].numpy()).all()  # a missing numeric is imputed
