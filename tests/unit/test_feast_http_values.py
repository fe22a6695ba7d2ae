"""The transformer reads Feast's feature server answers in the JSON form the server sends."""

from __future__ import annotations

import pytest

from serving.online import _proto_value

pytestmark = pytest.mark.unit


def test_values_as_feast_serve_renders_them() -> None:
    """`feast serve` (0.47) patches protobuf's JSON form of a Value to plain JSON values; the
    transformer once expected {"double_val": ...} and failed on every cluster lookup."""
    from feast import proto_json
    from feast.protos.feast.serving.ServingService_pb2 import GetOnlineFeaturesResponse
    from google.protobuf.json_format import MessageToDict

    proto_json.patch()
    resp = GetOnlineFeaturesResponse()
    vector = resp.results.add()
    vector.values.add().double_val = 1.5
    vector.values.add().string_val = "N14228"
    vector.values.add().int64_val = 2004
    vector.values.add()  # absent
    as_json = MessageToDict(resp, preserving_proto_field_name=True, float_precision=18)
    assert [_proto_value(v) for v in as_json["results"][0]["values"]] == [
        1.5, "N14228", 2004, None
    ]  # fmt: skip


def test_message_to_dict_values_still_read() -> None:
    assert _proto_value({"double_val": 2.5}) == 2.5
    assert _proto_value({"int64_val": "7"}) == 7
    assert _proto_value({}) is None
