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
        (good(event_timestamp="yesterday"), "event_timestamp", "not an ISO 8601 time"),
        (good(event_timestamp="2013-06-14T16:00:00"), "event_timestamp", "no UTC offset"),
        (good(event_timestamp=1371225600), "event_timestamp", "must be an ISO 8601 string"),
    ],
)
def test_bad_instance_names_its_field(row: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(RequestError) as err:
        validate_instances([good(), row], SCHEMA)
    assert err.value.field == field
    assert err.value.index == 1
    assert words in str(err.value) and f"instances[1].{field}" in str(err.value)


def test_event_timestamp_is_optional_and_read_as_epoch_seconds() -> None:
    """The prediction moment: any UTC offset, converted; absent or null, left out."""
    utc, eastern = "2013-06-14T16:00:00Z", "2013-06-14T12:00-04:00"
    out = validate_instances(
        [good(event_timestamp=utc), good(event_timestamp=eastern), good(),
         good(event_timestamp=None)],
        SCHEMA,
    )  # fmt: skip
    assert out[0]["event_timestamp"] == out[1]["event_timestamp"] == 1371225600.0
    assert "event_timestamp" not in out[2] and "event_timestamp" not in out[3]


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


def test_an_install_without_the_packaged_schema_stops_the_server(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chart passes no --schema: the packaged one is the default, never open vocabularies."""
    from mlops import artifacts

    monkeypatch.setattr(artifacts, "packaged_schema", lambda: tmp_path / "schema.pbtxt")
    with pytest.raises(FileNotFoundError, match="packaged schema is missing"):
        load_schema()


def test_the_predictor_labels_what_storage_uri_names() -> None:
    """KServe mounts the version at /mnt/models: the version comes from STORAGE_URI."""
    from serving.predictor import served_version

    uri = "pvc://flight-delay-registry/flight-delay/versions/3/model"
    assert served_version(None, "/mnt/models", {"STORAGE_URI": uri}) == "3"
    assert served_version("7", "/mnt/models", {"STORAGE_URI": uri}) == "7"
    assert served_version(None, "/r/flight-delay/versions/2/model", {}) == "2"


# V2: the transformer's declared inputs (as its get_input_types says them).
V2_TYPES = {k: ("BYTES" if isinstance(v, str) else "FP32") for k, v in good().items()}


def v2_inputs(n: int = 2, **over: dict[str, Any]) -> list[Any]:
    """Real KServe ``InferInput`` objects, one per field, ``n`` rows; ``over`` patches fields."""
    from kserve.protocol.infer_type import InferInput

    out = []
    for name, value in good().items():
        spec = {"shape": [n], "datatype": V2_TYPES[name], "data": [value] * n}
        spec.update(over.get(name, {}))
        out.append(InferInput(name, spec["shape"], spec["datatype"], data=spec["data"]))
    return out


def test_v2_inputs_become_columns() -> None:
    from serving.validation import validate_v2_inputs

    cols = validate_v2_inputs(v2_inputs(3), V2_TYPES)
    assert cols["carrier"] == ["UA"] * 3 and cols["distance"] == [1400] * 3
    assert v2_columns_to_instances(cols) == [good()] * 3
    nested = v2_inputs(2, month={"shape": [2, 1], "data": [[1], [1]]})
    assert validate_v2_inputs(nested, V2_TYPES)["month"] == [1, 1]


@pytest.mark.parametrize(
    ("over", "field", "words"),
    [
        # The declared shape is what an array would be built to: it must match the data.
        ({"distance": {"shape": [1_000_000_000]}}, "distance", "exceeds the limit"),
        ({"distance": {"shape": [3]}}, "distance", "has 3 rows"),
        ({"carrier": {"data": ["UA"]}}, "carrier", "declared shape [2] but 1 values"),
        ({"distance": {"datatype": "FP64"}}, "distance", "datatype 'FP64', expected 'FP32'"),
        ({"origin": {"datatype": "FP32", "data": [1.0, 2.0]}}, "origin", "expected 'BYTES'"),
        ({"month": {"shape": [2, 3]}}, "month", "shape must be [n] or [n, 1]"),
        ({"month": {"shape": [-2]}}, "month", "shape must be"),
        ({"month": {"data": [1, "x"]}}, "month", "[1] is not a FP32 value"),
        ({"month": {"data": [True, 1]}}, "month", "[0] is not a FP32 value"),
        ({"tailnum": {"data": ["N1", {"a": 1}]}}, "tailnum", "[1] is not a BYTES value"),
        ({"dest": {"data": "IAH"}}, "dest", "data must be a list"),
    ],
)  # fmt: skip
def test_a_malformed_v2_tensor_names_its_input(over: dict, field: str, words: str) -> None:
    from serving.validation import validate_v2_inputs

    ((name, patch),) = over.items()
    with pytest.raises(RequestError) as err:
        validate_v2_inputs(v2_inputs(2, **{name: patch}), V2_TYPES, max_batch=64)
    assert err.value.field == field and words in str(err.value), str(err.value)


def test_v2_input_names_and_batch_size() -> None:
    from kserve.protocol.infer_type import InferInput

    from serving.validation import validate_v2_inputs

    inputs = v2_inputs(2)
    with pytest.raises(RequestError, match="colour: unknown input"):
        validate_v2_inputs([*inputs, InferInput("colour", [2], "BYTES", data=["a", "b"])],
                           V2_TYPES)  # fmt: skip
    with pytest.raises(RequestError, match="month: input given twice"):
        validate_v2_inputs([*inputs, inputs[6]], V2_TYPES)
    with pytest.raises(RequestError, match="month: missing input"):
        validate_v2_inputs(inputs[:6] + inputs[7:], V2_TYPES)
    with pytest.raises(RequestError, match="must not be empty"):
        validate_v2_inputs(v2_inputs(0), V2_TYPES)


def test_raw_v2_tensors_are_counted_before_they_are_decoded() -> None:
    """gRPC's raw_input_contents: the byte length says the element count, checked first."""
    import numpy as np
    from kserve.protocol.infer_type import InferInput

    from serving.validation import validate_v2_inputs

    inputs = v2_inputs(2)
    raw = {}
    for inp in inputs:
        arr = np.array(inp.data, dtype=np.float32 if inp.datatype == "FP32" else object)
        tensor = InferInput(inp.name, [2], inp.datatype)
        tensor.set_data_from_numpy(arr, binary_data=True)
        raw[inp.name] = tensor
    cols = validate_v2_inputs(list(raw.values()), V2_TYPES)
    assert cols["tailnum"] == ["N14228"] * 2 and cols["distance"] == [1400.0] * 2
    raw["distance"]._shape = [3]
    with pytest.raises(RequestError, match="distance: has 3 rows"):
        validate_v2_inputs(list(raw.values()), V2_TYPES)
    raw["distance"]._shape = [2]
    raw["tailnum"]._raw_data = raw["tailnum"]._raw_data[:-1]
    with pytest.raises(RequestError, match="tailnum: raw BYTES tensor ends inside"):
        validate_v2_inputs(list(raw.values()), V2_TYPES)
