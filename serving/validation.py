"""Request validation against the serving schema: a pure function, no server, no TensorFlow.

The serving request carries ``mlops.features.REQUEST_FIELDS`` (the request features plus
``tailnum``, the entity key of the plane features). Domains come from the curated TFDV schema's
``SERVING`` environment, shipped as package data of ``mlops`` (``mlops/schema/schema.pbtxt``, so
the serving image needs no ``components/``), intersected with the contract's hard ranges
``mlops.features.REQUEST_RANGES`` (a departure hour is 0-23 whatever the data showed).

Policy for unknown categories: ``carrier``, ``origin`` and ``dest`` have closed vocabularies in
the schema, and a value outside them is refused with a 4xx naming the field and the value (a
mistyped airport code is a caller's bug, not a new airport). An unknown ``tailnum`` is not an
error: it is an entity key, and a plane absent from the Feast online store is handled by the
transformer's missing-entity policy.

An instance may also carry ``event_timestamp`` (``F.EVENT_TIMESTAMP``), the prediction moment as
an ISO 8601 time with its UTC offset (``2013-06-14T16:00:00Z``): the staleness policy of the
real-time features is applied against it (``serving.online``); without it the moment is the
server's clock. A time without an offset is refused: it would be read in the server's zone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mlops import artifacts as A
from mlops import features as F

SERVING_ENV = "SERVING"
DEFAULT_MAX_BATCH = 256
# A tail number is an FAA registration; the data's placeholder for a missing one is accepted too.
TAILNUM_RE = re.compile(r"^[A-Z0-9]{1,10}$")


class RequestError(ValueError):
    """A request the server refuses with a 4xx; ``field`` names the offending field."""

    def __init__(self, field: str, message: str, index: int | None = None) -> None:
        where = f"instances[{index}].{field}" if index is not None else field
        super().__init__(f"{where}: {message}")
        self.field = field
        self.index = index
        self.message = message


@dataclass(frozen=True)
class ServingSchema:
    """What a valid request instance looks like.

    Attributes:
        vocabularies: Closed vocabulary per categorical request field.
        ranges: Inclusive ``(min, max)`` per numeric request field.
        source: Where the domains came from (for logs and docs).
    """

    vocabularies: dict[str, frozenset[str]] = field(default_factory=dict)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    source: str = "contract"


def load_schema(path: Path | None = None) -> ServingSchema:
    """Read the serving domains from a TFDV schema.

    Args:
        path: A ``schema.pbtxt``; by default the curated one shipped with ``mlops``
            (``mlops.artifacts.packaged_schema``).

    Raises:
        FileNotFoundError: The schema, named or packaged, is not a file.
    """
    if path is not None and not path.is_file():
        # A schema that was asked for and is not there must not silently open the vocabularies.
        raise FileNotFoundError(f"--schema {path}: no such file")
    path = path or A.packaged_schema()
    if not path.is_file():
        # The schema ships with the code: an install without it is broken, and serving with open
        # vocabularies would hide that (the serving image once did, see the chart tests).
        raise FileNotFoundError(f"{path}: the packaged schema is missing from this install")
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = text_format.Parse(path.read_text(), schema_pb2.Schema())
    vocab: dict[str, frozenset[str]] = {}
    ranges = dict(F.REQUEST_RANGES)
    for feat in schema.feature:
        if feat.name not in F.REQUEST_FIELDS or SERVING_ENV in feat.not_in_environment:
            continue
        if feat.HasField("string_domain"):
            vocab[feat.name] = frozenset(feat.string_domain.value)
        elif feat.HasField("domain"):
            named = {d.name: d for d in schema.string_domain}
            if feat.domain in named:
                vocab[feat.name] = frozenset(named[feat.domain].value)
        if feat.HasField("float_domain") and feat.name in ranges:
            lo, hi = ranges[feat.name]
            fd = feat.float_domain
            ranges[feat.name] = (
                max(lo, fd.min) if fd.HasField("min") else lo,
                min(hi, fd.max) if fd.HasField("max") else hi,
            )
    return ServingSchema(vocabularies=vocab, ranges=ranges, source=str(path))


def _numeric(value: Any, name: str, index: int, schema: ServingSchema) -> float:
    # bool is an int in Python; a JSON true is never a distance.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(name, f"must be a number, got {type(value).__name__} {value!r}", index)
    number = float(value)
    if not math.isfinite(number):
        raise RequestError(name, f"must be finite, got {value!r}", index)
    lo, hi = schema.ranges.get(name, (-math.inf, math.inf))
    if not lo <= number <= hi:
        raise RequestError(name, f"{number:g} is outside [{lo:g}, {hi:g}]", index)
    return number


def _category(value: Any, name: str, index: int, schema: ServingSchema) -> str:
    if not isinstance(value, str):
        raise RequestError(name, f"must be a string, got {type(value).__name__} {value!r}", index)
    if value == "":
        raise RequestError(name, "must not be empty", index)
    vocab = schema.vocabularies.get(name)
    if vocab is not None and value not in vocab:
        raise RequestError(name, f"unknown category {value!r}", index)
    return value


# Fields an instance may leave out: the prediction moment (default: the server's clock).
OPTIONAL_FIELDS: tuple[str, ...] = (F.EVENT_TIMESTAMP,)


def parse_moment(value: Any, index: int | None = None) -> float:
    """An ISO 8601 time with a UTC offset as epoch seconds.

    Raises:
        RequestError: Not a string, not ISO 8601, or without an offset; names the field.
    """
    name = F.EVENT_TIMESTAMP
    if not isinstance(value, str):
        raise RequestError(name, f"must be an ISO 8601 string, got {type(value).__name__}", index)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as err:
        raise RequestError(name, f"not an ISO 8601 time: {value[:40]!r}", index) from err
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise RequestError(
            name, f"{value[:40]!r} has no UTC offset (e.g. 2013-06-14T16:00:00Z)", index
        )
    return moment.timestamp()


def validate_instance(raw: Any, index: int, schema: ServingSchema) -> dict[str, Any]:
    """Validate one request instance and return it with numbers as floats.

    An ``event_timestamp`` given (not null) is returned as epoch seconds; absent, it is absent.

    Raises:
        RequestError: A field is missing, unknown, of the wrong type, out of its domain or NaN.
    """
    if not isinstance(raw, Mapping):
        raise RequestError("instances", f"each instance must be an object, got {raw!r}", index)
    unknown = sorted(set(raw) - set(F.REQUEST_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise RequestError(unknown[0], "unknown field", index)
    out: dict[str, Any] = {}
    if raw.get(F.EVENT_TIMESTAMP) is not None:
        out[F.EVENT_TIMESTAMP] = parse_moment(raw[F.EVENT_TIMESTAMP], index)
    for name in F.REQUEST_FIELDS:
        if name not in raw or raw[name] is None:
            raise RequestError(name, "missing field", index)
        value = raw[name]
        if name == F.TAILNUM:
            if not isinstance(value, str) or not (
                value == F.MISSING_CATEGORY or TAILNUM_RE.match(value)
            ):
                raise RequestError(name, f"not a tail number: {value!r}", index)
            out[name] = value
        elif name in F.NUMERIC_FEATURES:
            out[name] = _numeric(value, name, index, schema)
        else:
            out[name] = _category(value, name, index, schema)
    return out


def validate_instances(
    instances: Any, schema: ServingSchema, max_batch: int = DEFAULT_MAX_BATCH
) -> list[dict[str, Any]]:
    """Validate a batch of request instances.

    Args:
        instances: The decoded ``instances`` of a V1 request (or the rows of a V2 request).
        schema: Domains to check against (see ``load_schema``).
        max_batch: Largest batch accepted.

    Returns:
        The instances, each with every field of ``F.REQUEST_FIELDS`` and numbers as floats.

    Raises:
        RequestError: The first problem found, naming its field (and instance index).
    """
    if not isinstance(instances, list):
        raise RequestError("instances", f"must be a list, got {type(instances).__name__}")
    if not instances:
        raise RequestError("instances", "must not be empty")
    if len(instances) > max_batch:
        raise RequestError("instances", f"batch of {len(instances)} exceeds the limit {max_batch}")
    return [validate_instance(raw, i, schema) for i, raw in enumerate(instances)]


def v2_columns_to_instances(inputs: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """Turn V2 columns (one tensor per field) into V1-style instances, checking their lengths.

    Raises:
        RequestError: A field is missing, unknown, or its length differs from the others.
    """
    unknown = sorted(set(inputs) - set(F.REQUEST_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise RequestError(unknown[0], "unknown input")
    missing = [n for n in F.REQUEST_FIELDS if n not in inputs]
    if missing:
        raise RequestError(missing[0], "missing input")
    lengths = {n: len(v) for n, v in inputs.items()}
    n = lengths[F.REQUEST_FIELDS[0]]
    for name, length in lengths.items():
        if length != n:
            raise RequestError(name, f"has {length} values, {F.REQUEST_FIELDS[0]} has {n}")
    names = [name for name in (*F.REQUEST_FIELDS, *OPTIONAL_FIELDS) if name in inputs]
    return [{name: inputs[name][i] for name in names} for i in range(n)]


# V2 datatypes this platform's tensors use, and the Python values a decoded JSON/gRPC tensor of
# each may hold (``None``: a missing number, as the transformer sends the predictor NaN).
_V2_VALUES: dict[str, tuple[type, ...]] = {
    "FP32": (int, float, type(None)),
    "BYTES": (str, bytes),
}


def _v2_shape(name: str, shape: Any) -> int:
    """The row count a declared shape means: ``[n]`` or ``[n, 1]``."""
    if (
        not isinstance(shape, list | tuple)
        or not 1 <= len(shape) <= 2
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        or (len(shape) == 2 and shape[1] != 1)
    ):
        raise RequestError(name, f"shape must be [n] or [n, 1], got {shape!r}")
    return int(shape[0])


def _raw_count(name: str, datatype: str, raw: bytes) -> int:
    """Elements in a raw (binary) tensor, counted without decoding it."""
    if datatype == "FP32":
        if len(raw) % 4:
            raise RequestError(name, f"{len(raw)} raw bytes are not a whole number of FP32")
        return len(raw) // 4
    count, at = 0, 0
    while at < len(raw):  # BYTES: each element is a 4-byte little-endian length, then the bytes
        if at + 4 > len(raw):
            raise RequestError(name, "raw BYTES tensor ends inside an element's length")
        at += 4 + int.from_bytes(raw[at : at + 4], "little")
        count += 1
    if at != len(raw):
        raise RequestError(name, "raw BYTES tensor ends inside an element")
    return count


def _flat(name: str, data: Any, two_d: bool) -> list[Any]:
    if not isinstance(data, list):
        raise RequestError(name, f"data must be a list, got {type(data).__name__}")
    if two_d and data and isinstance(data[0], list):  # row-major nested [[v], [v], ...]
        if not all(isinstance(row, list) and len(row) == 1 for row in data):
            raise RequestError(name, "nested data must be one value per row")
        return [row[0] for row in data]
    return data


def validate_v2_inputs(
    inputs: Any,
    expected: Mapping[str, str],
    max_batch: int | None = DEFAULT_MAX_BATCH,
    optional: Collection[str] = (),
) -> dict[str, list[Any]]:
    """Check V2 input tensors against the declared inputs, then return them as columns.

    Everything is checked on the request's own fields (names, datatypes, declared shapes against
    the data's length, one batch size across inputs, the values' types) before a tensor is
    turned into an array: a shape that does not match its data, or a batch past ``max_batch``,
    costs no memory.

    Args:
        inputs: The request's ``InferInput`` objects (REST or gRPC decoded).
        expected: Datatype per input name (the model's ``get_input_types``); every one is
            required, unless named in ``optional``, and no other is accepted.
        max_batch: Largest row count accepted; ``None`` for no bound but the body cap.
        optional: Inputs of ``expected`` a request may leave out.

    Returns:
        Column per input name: a flat list of ``n`` values, ``BYTES`` decoded to ``str``.

    Raises:
        RequestError: The first problem found, naming the input.
    """
    seen = _v2_by_name(inputs, expected, optional)
    columns: dict[str, list[Any]] = {}
    batch: tuple[str, int] | None = None
    for name, tensor in seen.items():
        if tensor.datatype != expected[name]:
            raise RequestError(name, f"datatype {tensor.datatype!r}, expected {expected[name]!r}")
        n = _v2_shape(name, tensor.shape)
        if n == 0:
            raise RequestError(name, "shape [0]: the batch must not be empty")
        if max_batch is not None and n > max_batch:
            raise RequestError(name, f"batch of {n} exceeds the limit {max_batch}")
        if batch is None:
            batch = (name, n)
        elif n != batch[1]:
            raise RequestError(name, f"has {n} rows, {batch[0]} has {batch[1]}")
        columns[name] = _v2_values(name, tensor, n)
    return columns


def _v2_by_name(
    inputs: Any, expected: Mapping[str, str], optional: Collection[str] = ()
) -> dict[str, Any]:
    """The request's tensors by name: each expected input exactly once, no other."""
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("inputs", "must be a non-empty list of tensors")
    seen: dict[str, Any] = {}
    for tensor in inputs:
        name = tensor.name
        if not isinstance(name, str) or name not in expected:
            raise RequestError(str(name), "unknown input")
        if name in seen:
            raise RequestError(name, "input given twice")
        seen[name] = tensor
    missing = [n for n in expected if n not in seen and n not in optional]
    if missing:
        raise RequestError(missing[0], "missing input")
    return seen


def _v2_values(name: str, tensor: Any, n: int) -> list[Any]:
    """The ``n`` values of one tensor whose declared shape says ``n`` rows, type-checked.

    The values are counted before they are decoded: a raw tensor becomes an array only once its
    byte length matches the declared shape.
    """
    raw = tensor._raw_data
    if raw is not None:
        count = _raw_count(name, tensor.datatype, bytes(raw))
    else:
        data = _flat(name, tensor.data, len(tensor.shape) == 2)
        count = len(data)
    if count != n:
        raise RequestError(name, f"declared shape {list(tensor.shape)} but {count} values")
    if raw is not None:
        data = tensor.as_numpy().reshape(-1).tolist()  # sizes checked: bounded by the body
    allowed = _V2_VALUES[tensor.datatype]
    for i, v in enumerate(data):
        if isinstance(v, bool) or not isinstance(v, allowed):
            raise RequestError(name, f"[{i}] is not a {tensor.datatype} value: {repr(v)[:40]}")
        if isinstance(v, bytes):
            try:
                data[i] = v.decode()
            except UnicodeDecodeError as err:
                raise RequestError(name, f"[{i}] is not UTF-8") from err
    return data


def v2_input_types(input_types: list[dict[str, Any]]) -> dict[str, str]:
    """``{name: datatype}`` of a model's ``get_input_types()``."""
    return {t["name"]: t["datatype"] for t in input_types}
