"""Unit tests of the serving request validator (pure function, no server, no TensorFlow)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from serving.validation import (
    RequestError,
    load_schema,
    v2_columns_to_instances,
    validate_instances,
)

pytestmark = pytest.mark.unit

SCHEMA = load_schema()


def good(**over: Any) -> dict[str, Any]:
    row = {"carrier": "UA", "origin": "EWR", "dest": "IAH", "distance": 1400, "sched_dep_hour": 5,
           "day_of_week": 1, "month": 1, "tailnum": "N14228"}  # fmt: skip
    row.update(over)
    return row


def test_valid_batch_is_returned_with_floats() -> None:
    out = validate_instances([good(), good(carrier="B6")], SCHEMA)
    assert out[0]["distance"] == 1400.0 and isinstance(out[0]["distance"], float)
    assert out[1]["carrier"] == "B6"


@pytest.mark.parametrize(
    ("row", "field", "words"),
    [
        (good(distance="far"), "distance", "must be a number"),
        (good(distance=True), "distance", "must be a number"),
        (good(sched_dep_hour=math.nan), "sched_dep_hour", "finite"),
        (good(sched_dep_hour=25), "sched_dep_hour", "outside"),
        (good(carrier="ZZ"), "carrier", "unknown category 'ZZ'"),
        (good(origin=3), "origin", "must be a string"),
        (good(tailnum="not a tail"), "tailnum", "not a tail number"),
        ({k: v for k, v in good().items() if k != "month"}, "month", "missing field"),
        (good(colour="red"), "colour", "unknown field"),
    ],
)
def test_bad_instance_names_its_field(row: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(RequestError) as err:
        validate_instances([good(), row], SCHEMA)
    assert err.value.field == field
    assert err.value.index == 1
    assert words in str(err.value) and f"instances[1].{field}" in str(err.value)


def test_oversized_empty_and_non_list_batches() -> None:
    with pytest.raises(RequestError, match="exceeds the limit 3"):
        validate_instances([good()] * 4, SCHEMA, max_batch=3)
    with pytest.raises(RequestError, match="must not be empty"):
        validate_instances([], SCHEMA)
    with pytest.raises(RequestError, match="must be a list"):
        validate_instances({"carrier": "UA"}, SCHEMA)


def test_v2_columns_become_instances_and_lengths_are_checked() -> None:
    cols = {k: [v, v] for k, v in good().items()}
    assert v2_columns_to_instances(cols) == [good(), good()]
    cols["month"] = [1]
    with pytest.raises(RequestError, match="month: has 1 values"):
        v2_columns_to_instances(cols)


def test_a_named_schema_that_is_missing_stops_the_server(tmp_path: Any) -> None:
    """The serving image once lacked the schema and served open vocabularies: never silently."""
    with pytest.raises(FileNotFoundError, match="--schema"):
        load_schema(tmp_path / "schema.pbtxt")


def test_the_predictor_labels_what_storage_uri_names() -> None:
    """KServe mounts the version at /mnt/models: the version comes from STORAGE_URI."""
    from serving.predictor import served_version

    uri = "pvc://flight-delay-registry/flight-delay/versions/3/model"
    assert served_version(None, "/mnt/models", {"STORAGE_URI": uri}) == "3"
    assert served_version("7", "/mnt/models", {"STORAGE_URI": uri}) == "7"
    assert served_version(None, "/r/flight-delay/versions/2/model", {}) == "2"
