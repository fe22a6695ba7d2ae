"""Infer the schema once from the real 2013 data, then curate it; the result is checked in.

Run ``python -m components.validate.infer_schema`` (after ``make data``) to regenerate
``components/validate/schema/schema.pbtxt``. The curation is code, so it is reviewable:

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
  distant seasons stand out.
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
from mlops import features as F

RANGE_MARGIN = 0.25
PRESENCE_KEEP = 0.6
THRESHOLD_FACTOR = 1.5
MIN_THRESHOLD = 0.05
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
        if name in NO_COMPARATOR:
            pass
        elif name in F.CATEGORICAL_FEATURES:
            feature.ClearField("string_domain")
            values = sorted(str(v) for v in year[name].dropna().unique())
            feature.string_domain.name = name
            feature.string_domain.value.extend(values)
            feature.drift_comparator.infinity_norm.threshold = 1.0
            feature.skew_comparator.infinity_norm.threshold = 1.0
        elif name == "month":
            # The month is the span itself: it always "drifts" between spans, so no comparator.
            feature.float_domain.min, feature.float_domain.max = 1, 12
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
    args = parser.parse_args(argv)
    ingest(args.feature_repo, SpanWindow("2013-01", "2013-12"), args.work / "train.parquet",
           args.work / "eval.parquet")  # fmt: skip
    year = pd.concat([pd.read_parquet(args.work / f"{s}.parquet") for s in ("train", "eval")])
    schema, largest = infer(year)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tfdv.write_schema_text(schema, str(args.out))
    calibration = args.out.with_name("calibration.json")
    calibration.write_text(json.dumps({"largest_month_to_month_drift": largest,
                                       "threshold_factor": THRESHOLD_FACTOR}, indent=2,
                                      sort_keys=True) + "\n")  # fmt: skip
    print(f"schema written to {args.out}; calibration in {calibration}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
