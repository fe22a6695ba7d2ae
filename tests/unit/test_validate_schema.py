"""The checked-in, curated TFDV schema against the feature contract (no TensorFlow import)."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_span_limits_are_calibrated_from_2013_and_load() -> None:
    from components.validate.infer_schema import MIN_MISSING_RISE, THRESHOLD_FACTOR
    from components.validate.span_checks import CALIBRATION_KEY, DEFAULT_CALIBRATION, SpanLimits

    raw = json.loads(DEFAULT_CALIBRATION.read_text())[CALIBRATION_KEY]
    assert raw["rows_per_day_change"] == round(
        THRESHOLD_FACTOR * raw["largest_rows_per_day_change"], 3
    )
    assert raw["label_rate_change"] == round(THRESHOLD_FACTOR * raw["largest_label_rate_change"], 3)
    assert sorted(raw["missing_rate_rise"]) == sorted(F.FEATURE_NAMES)
    for name, limit in raw["missing_rate_rise"].items():
        largest = raw["largest_missing_rate_change"][name]
        assert limit == round(max(MIN_MISSING_RISE, THRESHOLD_FACTOR * largest), 3), name
    low, high = raw["reference_2013"]["label_rate"]
    assert raw["label_rate_band"][0] < low < high < raw["label_rate_band"][1]
    limits = SpanLimits.load()
    assert 0.05 < limits.rows_per_day_change < 0.3  # months differ by a few percent per day
    assert limits.missing_rate_rise["temp"] < 0.1  # a 10-day weather outage (~32 %) crosses
    assert limits.label_rate_band[0] > 0.0  # an all-0 label is outside the band


def test_span_limits_name_the_missing_field(tmp_path: Path) -> None:
    from components.validate.span_checks import SpanLimits

    (tmp_path / "c.json").write_text(json.dumps({"span_checks": {"rows_per_day_change": 0.1}}))
    with pytest.raises(ValueError, match="'span_checks' lacks the field 'reference_2013'"):
        SpanLimits.load(tmp_path / "c.json")
    (tmp_path / "d.json").write_text("{}")
    with pytest.raises(ValueError, match="no 'span_checks' section"):
        SpanLimits.load(tmp_path / "d.json")


def test_report_lists_spans_and_marks_the_failed_one() -> None:
    verdict = Verdict(
        ok=False,
        anomalies=[
            Anomaly(
                F.WEATHER_VIEW, "missing-value jump", "span 2013-03: temp 32% missing", "2013-03"
            ),
        ],
        spans={
            "2013-02": {
                "rows": 23611,
                "rows_per_day": 843.25,
                "label_rate": 0.23,
                "compared_with": "the months of 2013",
            },
            "2013-03": {
                "rows": 27902,
                "rows_per_day": 900.06,
                "label_rate": 0.2284,
                "compared_with": "2013-02",
            },
        },
    )
    report = verdict.report_markdown()
    assert f"| {F.WEATHER_VIEW} | missing-value jump | span 2013-03: temp 32% missing |" in report
    assert "| 2013-02 | 23611 | 843.2 | 23.0% | the months of 2013 | ok |" in report
    assert "| 2013-03 | 27902 | 900.1 | 22.8% | 2013-02 | **missing-value jump** |" in report
    assert json.loads(verdict.to_json())["anomalies"][0]["span"] == "2013-03"
