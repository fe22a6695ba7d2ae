"""The one slice derivation of the feature contract: per row and per frame, missing values alike."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops import features as F

pytestmark = pytest.mark.unit


def _rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            F.CARRIER: ["UA", None, "ZZ", "B6", "DL"],
            F.ORIGIN: ["EWR", "JFK", np.nan, "LGA", "JFK"],
            F.SCHED_DEP_HOUR: [5.0, np.nan, 13.0, 23.0, 6.0],
        }
    )


def test_row_and_frame_derive_the_same_values() -> None:
    df = _rows()
    for bounded in (False, True):
        frame = F.slice_frame(df, bounded=bounded)
        assert list(frame.columns) == list(F.SLICE_KEYS)
        for i, row in enumerate(df.to_dict(orient="records")):
            assert F.slice_values(row, bounded=bounded) == frame.iloc[i].to_dict()


def test_hour_band_follows_hour_band() -> None:
    frame = F.slice_frame(_rows())
    assert list(frame[F.HOUR_BAND]) == [
        "night",
        F.MISSING_CATEGORY,
        "afternoon",
        "evening",
        "morning",
    ]


@pytest.mark.parametrize("hour", [None, float("nan"), "not a number"])
def test_a_missing_hour_is_its_own_slice_and_other_once_bounded(hour: object) -> None:
    row = {F.CARRIER: "UA", F.ORIGIN: "EWR", F.SCHED_DEP_HOUR: hour}
    assert F.slice_values(row)[F.HOUR_BAND] == F.MISSING_CATEGORY
    assert F.slice_values(row, bounded=True)[F.HOUR_BAND] == F.OTHER_SLICE


def test_values_off_the_allow_list_are_other_once_bounded() -> None:
    frame = F.slice_frame(_rows(), bounded=True)
    assert list(frame[F.CARRIER]) == ["UA", F.OTHER_SLICE, F.OTHER_SLICE, "B6", "DL"]
    assert list(frame[F.ORIGIN]) == ["EWR", "JFK", F.OTHER_SLICE, "LGA", "JFK"]
