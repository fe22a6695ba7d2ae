"""The checked-in, curated TFDV schema against the feature contract (no TensorFlow import)."""

from __future__ import annotations

import json

import pytest
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from components.validate.core import DEFAULT_SCHEMA, Anomaly, Verdict
from mlops import features as F

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def schema() -> schema_pb2.Schema:
    return text_format.Parse(DEFAULT_SCHEMA.read_text(), schema_pb2.Schema())


def feature(schema: schema_pb2.Schema, name: str) -> schema_pb2.Feature:
    return next(f for f in schema.feature if f.name == name)


def test_schema_covers_the_contract_and_nothing_else(schema: schema_pb2.Schema) -> None:
    assert sorted(f.name for f in schema.feature) == sorted((*F.FEATURE_NAMES, F.LABEL))
    for name in F.CATEGORICAL_FEATURES:
        assert feature(schema, name).type == schema_pb2.BYTES, name
    for name in F.NUMERIC_FEATURES:
        assert feature(schema, name).type == schema_pb2.FLOAT, name
    assert feature(schema, F.LABEL).type == schema_pb2.INT


def test_domains_are_closed_and_sane(schema: schema_pb2.Schema) -> None:
    domains = {n: set(feature(schema, n).string_domain.value) for n in F.CATEGORICAL_FEATURES}
    assert domains[F.ORIGIN] == {"EWR", "JFK", "LGA"}
    assert set(F.SLICE_ALLOWLIST[F.CARRIER]) <= domains[F.CARRIER]
    assert len(domains[F.CARRIER]) == 16  # the carriers flying from NYC in 2013
    assert 95 <= len(domains["dest"]) <= 110  # ~105 destinations; serving reads this domain
    for name in F.NUMERIC_FEATURES:
        dom = feature(schema, name).float_domain
        assert dom.min < dom.max, name
    assert (feature(schema, "month").float_domain.min, feature(schema, "month").float_domain.max) \
        == (1, 12)  # fmt: skip
    hour = feature(schema, "sched_dep_hour").float_domain
    assert hour.min <= 0 and hour.max >= 23
    label = feature(schema, F.LABEL).int_domain
    assert (label.min, label.max) == (0, 1)


def test_presence_tolerates_known_gaps_but_not_empty_columns(schema: schema_pb2.Schema) -> None:
    fraction = {f.name: f.presence.min_fraction for f in schema.feature}
    for name in (*F.REQUEST_FEATURE_NAMES, F.LABEL):
        assert fraction[name] == 1.0, name
    # wind_gust is ~75 % missing, plane attributes ~16 %, the delay rate early in January.
    assert 0.0 < fraction["wind_gust"] < 0.25
    assert 0.0 < fraction["plane_year"] < 0.84
    assert 0.0 < fraction["carrier_delay_rate_7d"] < 0.7


def test_comparators_follow_the_feature_kind(schema: schema_pb2.Schema) -> None:
    for name in F.CATEGORICAL_FEATURES:
        f = feature(schema, name)
        assert f.drift_comparator.infinity_norm.threshold > 0, name
        assert f.skew_comparator.infinity_norm.threshold > 0, name
    for name in F.NUMERIC_FEATURES:
        f = feature(schema, name)
        if name == "month":  # each span is its own month: no comparator by design
            assert not f.HasField("drift_comparator")
            continue
        assert 0 < f.drift_comparator.jensen_shannon_divergence.threshold <= 1, name
        assert 0 < f.skew_comparator.jensen_shannon_divergence.threshold <= 1, name


def test_label_is_absent_in_serving(schema: schema_pb2.Schema) -> None:
    assert set(schema.default_environment) == {"TRAINING", "SERVING"}
    assert list(feature(schema, F.LABEL).not_in_environment) == ["SERVING"]
    assert all(not f.not_in_environment for f in schema.feature if f.name != F.LABEL)


def test_verdict_json_and_report_name_each_feature() -> None:
    verdict = Verdict(
        ok=False,
        anomalies=[
            Anomaly(
                F.CARRIER,
                "Unexpected string values",
                "Examples contain values missing from the schema: ZZ (~2%).",
            ),
            Anomaly("visib", "Column dropped", "The feature was present in fewer examples."),
        ],
        drift={"temp": 0.81, "carrier": 0.01},
        drift_thresholds={"temp": 0.54, "carrier": 0.05},
        drifted=["temp"],
        rows=1000,
    )
    raw = json.loads(verdict.to_json())
    assert raw["ok"] is False
    assert [a["feature"] for a in raw["anomalies"]] == [F.CARRIER, "visib"]
    assert raw["drift"] == {"temp": 0.81, "carrier": 0.01}
    report = verdict.report_markdown()
    assert report.startswith("# Data validation: FAILED")
    assert "| carrier | Unexpected string values |" in report and "ZZ" in report
    assert "| visib | Column dropped |" in report
    assert "| temp | 0.8100 | 0.5400 | **yes** |" in report
    assert "| carrier | 0.0100 | 0.0500 | no |" in report
