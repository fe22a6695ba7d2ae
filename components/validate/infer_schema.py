"""Infer the schema once from the real 2013 data, then curate it; the result is checked in.

Run ``python -m components.validate.infer_schema`` (after ``make data``) to regenerate
``mlops/schema/schema.pbtxt`` (package data). The curation is code, so it is reviewable:

- string domains for every categorical feature, from the whole year (an unseen value is an
  anomaly);
- value ranges for numeric features: the year's range widened by a quarter of its span on each
  side (a value far outside is an anomaly; ordinary extremes are not);
- presence: always-present features must stay fully present; often-missing ones (wind gust,
  pressure, plane attributes, the carrier delay rate) must keep at least 60 % of their lowest
  monthly presence (the delay rate is absent in early January, before its first window is
  published), so a column of nulls is caught while a normal month passes;
- environments TRAINING and SERVING, with the label absent in SERVING;
- drift and skew comparators per feature (L-infinity for categorical, Jensen-Shannon for
  numeric; none for the month, which is the span itself), with thresholds set to 1.5 times
  the largest drift between consecutive months of 2013, so a normal next month passes while
  distant seasons stand out;
- the per-span checks (``span_checks.py``): limits on the change of rows per day, the rise of
  each feature's missing-value rate and the change of the label's positive rate between spans,
  each 1.5 times the largest change between consecutive months of 2013 (the missing-rate rise
  at least one point), and a band for the label rate (the lowest month's positive share and
  the highest month's negative share may shrink by that factor, no more).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from components.validate.core import DEFAULT_SCHEMA, compare, stats_from_dataframe
from components.validate.span_checks import CALIBRATION_KEY, DEFAULT_CALIBRATION, profile_spans
from mlops import features as F
from mlops.artifacts import EVAL_DATA_FILE, TRAIN_DATA_FILE

RANGE_MARGIN = 0.25
PRESENCE_KEEP = 0.6
THRESHOLD_FACTOR = 1.5
MIN_THRESHOLD = 0.05
# A missing-value rate may always rise by a point (~270 rows of a month) without blocking.
MIN_MISSING_RISE = 0.01
# Features whose drift is structural (each span is its own month), never a data problem.
NO_COMPARATOR = ("month",)


def curate(schema: Any, year: pd.DataFrame) -> Any:
    """Apply the curation rules above to an inferred schema (in place) and return it."""
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema.ClearField("string_domain")
    for feature in schema.feature:
        feature.ClearField("domain")
        name = feature.name
        if name == F.LABEL:
            feature.int_domain.min, feature.int_domain.max = 0, 1
            feature.presence.min_fraction = 1.0
            continue
        present = float(year.groupby(F.SPAN)[name].apply(lambda c: c.notna().mean()).min())
        feature.presence.min_fraction = (
            1.0 if present >= 0.9999 else round(PRESENCE_KEEP * present, 3)
        )
        if name == "month":
            # The month is the span itself: it always "drifts" between spans, so no comparator.
            feature.float_domain.min, feature.float_domain.max = 1, 12
        elif name in NO_COMPARATOR:
            pass
        elif name in F.CATEGORICAL_FEATURES:
            feature.ClearField("string_domain")
            values = sorted(str(v) for v in year[name].dropna().unique())
            feature.string_domain.name = name
            feature.string_domain.value.extend(values)
            feature.drift_comparator.infinity_norm.threshold = 1.0
            feature.skew_comparator.infinity_norm.threshold = 1.0
        else:
            lo, hi = float(year[name].min()), float(year[name].max())
            margin = RANGE_MARGIN * max(hi - lo, 1.0)
            feature.float_domain.min = math.floor(lo - margin)
            feature.float_domain.max = math.ceil(hi + margin)
            feature.drift_comparator.jensen_shannon_divergence.threshold = 1.0
            feature.skew_comparator.jensen_shannon_divergence.threshold = 1.0
    schema.default_environment.extend(["TRAINING", "SERVING"])
    tfdv.get_feature(schema, F.LABEL).not_in_environment.append("SERVING")
    assert isinstance(schema, schema_pb2.Schema)
    return schema


def calibrate(schema: Any, year: pd.DataFrame) -> dict[str, float]:
    """Set comparator thresholds from month-to-month drift; return the largest drift seen."""
    import tensorflow_data_validation as tfdv

    months = sorted(year[F.SPAN].unique())
    stats = {m: stats_from_dataframe(year[year[F.SPAN] == m]) for m in months}
    largest: dict[str, float] = {}
    for prev, cur in itertools.pairwise(months):
        values, _, _ = compare(stats[cur], stats[prev], schema, "drift")
        for name, value in values.items():
            largest[name] = max(largest.get(name, 0.0), value)
    for name, value in largest.items():
        if name == "month":
            continue
        threshold = round(max(MIN_THRESHOLD, THRESHOLD_FACTOR * value), 3)
        feature = tfdv.get_feature(schema, name)
        if name in F.CATEGORICAL_FEATURES:
            feature.drift_comparator.infinity_norm.threshold = threshold
            feature.skew_comparator.infinity_norm.threshold = threshold
        else:
            feature.drift_comparator.jensen_shannon_divergence.threshold = threshold
            feature.skew_comparator.jensen_shannon_divergence.threshold = threshold
    return largest


def calibrate_spans(year: pd.DataFrame) -> dict[str, Any]:
    """Limits of the per-span checks from consecutive months of ``year`` (calibration.json)."""
    profiles = list(profile_spans(year).values())
    pairs = list(itertools.pairwise(profiles))
    per_day = max(abs(cur.rows_per_day / prev.rows_per_day - 1) for prev, cur in pairs)
    rise = {
        name: max(abs(cur.missing[name] - prev.missing[name]) for prev, cur in pairs)
        for name in F.FEATURE_NAMES
    }
    rates = [float(p.label_rate or 0.0) for p in profiles]
    label = max(abs(b - a) for a, b in itertools.pairwise(rates))
    return {
        "largest_rows_per_day_change": per_day,
        "rows_per_day_change": round(THRESHOLD_FACTOR * per_day, 3),
        "largest_missing_rate_change": rise,
        "missing_rate_rise": {
            n: round(max(MIN_MISSING_RISE, THRESHOLD_FACTOR * v), 3) for n, v in rise.items()
        },
        "largest_label_rate_change": label,
        "label_rate_change": round(THRESHOLD_FACTOR * label, 3),
        "label_rate_band": [
            round(min(rates) / THRESHOLD_FACTOR, 3),
            round(1 - (1 - max(rates)) / THRESHOLD_FACTOR, 3),
        ],
        "reference_2013": {
            "rows_per_day": [
                min(p.rows_per_day for p in profiles),
                max(p.rows_per_day for p in profiles),
            ],
            "missing": {n: max(p.missing[n] for p in profiles) for n in F.FEATURE_NAMES},
            "label_rate": [min(rates), max(rates)],
        },
    }


def infer(year: pd.DataFrame) -> tuple[Any, dict[str, float]]:
    """Infer, curate and calibrate the schema from a year of training rows."""
    import tensorflow_data_validation as tfdv

    schema = tfdv.infer_schema(stats_from_dataframe(year))
    curate(schema, year)
    largest = calibrate(schema, year)
    return schema, largest


def main(argv: list[str] | None = None) -> int:
    """Regenerate the checked-in schema from the prepared data."""
    import tensorflow_data_validation as tfdv

    from components.ingest.core import SpanWindow, ingest

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feature-repo", type=Path, default=Path("feature_repo"))
    parser.add_argument("--work", type=Path, default=Path("runs/schema-inference"))
    parser.add_argument("--out", type=Path, default=DEFAULT_SCHEMA)
    parser.add_argument("--calibration-out", type=Path, default=DEFAULT_CALIBRATION)
    args = parser.parse_args(argv)
    splits = [args.work / TRAIN_DATA_FILE, args.work / EVAL_DATA_FILE]
    ingest(args.feature_repo, SpanWindow("2013-01", "2013-12"), *splits)
    year = pd.concat([pd.read_parquet(p) for p in splits])
    schema, largest = infer(year)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tfdv.write_schema_text(schema, str(args.out))
    calibration = args.calibration_out
    calibration.write_text(json.dumps({"largest_month_to_month_drift": largest,
                                       "threshold_factor": THRESHOLD_FACTOR,
                                       CALIBRATION_KEY: calibrate_spans(year)}, indent=2,
                                      sort_keys=True) + "\n")  # fmt: skip
    print(f"schema written to {args.out}; calibration in {calibration}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
