"""Transform input conversion and Beam option pass-through on a real span.

The full analyze-and-transform of a month and the training/serving equality check live in
``test_validate_transform.py``; these checks are cheap (no TFT analysis runs).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops import features as F

pytestmark = pytest.mark.integration

TrainingSet = Callable[[str, str], tuple[pd.DataFrame, pd.DataFrame]]


def test_record_batches_hold_one_value_a_row_with_nan_or_empty_for_missing(
    training_set: TrainingSet,
) -> None:
    import pyarrow as pa

    from components.transform.core import to_record_batches

    train, _ = training_set("2013-01", "2013-01")
    df = train.head(300).copy()
    df.loc[df.index[0], "temp"] = np.nan
    df.loc[df.index[1], F.CARRIER] = None
    df.loc[df.index[2], "dest"] = ""
    batches = to_record_batches(pa.Table.from_pandas(df, preserve_index=False), batch_rows=128)
    assert [b.num_rows for b in batches] == [128, 128, 44]
    batch = pa.Table.from_batches(batches)
    assert batch.schema.field("temp").type == pa.list_(pa.float32())
    assert batch.schema.field(F.CARRIER).type == pa.list_(pa.binary())
    for name in (*F.FEATURE_NAMES, F.LABEL):  # the served model's form: one value a row
        assert set(batch.column(name).combine_chunks().value_lengths().to_pylist()) == {1}, name
    values = {n: batch.column(n).combine_chunks().flatten().to_numpy(zero_copy_only=False)
              for n in F.FEATURE_NAMES}  # fmt: skip
    assert np.isnan(values["temp"][0])
    assert values[F.CARRIER][1] == b"" and values["dest"][2] == b""
    # Everywhere else a value is what the DataFrame has, and missing exactly where it has none.
    for name in F.NUMERIC_FEATURES:
        np.testing.assert_array_equal(
            values[name], df[name].astype("float32").to_numpy(), err_msg=name
        )
    for name in F.CATEGORICAL_FEATURES:
        expected = [b"" if v is None or v != v else str(v).encode() for v in df[name]]
        assert values[name].tolist() == expected, name

    with pytest.raises(ValueError, match="lacks columns: visib"):
        to_record_batches(pa.Table.from_pandas(df.drop(columns=["visib"])))


def test_beam_options_reach_the_pipeline(training_set: TrainingSet, tmp_path: Path) -> None:
    from components.transform.core import load_transformed_dataset, transform

    train, evaluation = training_set("2013-01", "2013-01")
    paths = []
    for name, df in (("train", train.head(100)), ("validation", evaluation.head(100))):
        paths.append(tmp_path / f"{name}.parquet")
        df.to_parquet(paths[-1], index=False)
    # An unknown runner is refused by Beam itself: the options are not swallowed or replaced.
    with pytest.raises(ValueError, match="NoSuchRunner"):
        transform(
            paths[0], paths[1], tmp_path / "graph", tmp_path / "xf", ["--runner=NoSuchRunner"]
        )
    with pytest.raises(FileNotFoundError, match=r"missing\.parquet"):
        transform(tmp_path / "missing.parquet", paths[1], tmp_path / "graph", tmp_path / "xf")
    with pytest.raises(ValueError, match="split must be one of"):
        load_transformed_dataset(tmp_path / "graph", tmp_path / "xf", "test", 8, False, 0)
