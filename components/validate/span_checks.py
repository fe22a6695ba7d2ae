"""Per-span checks that whole-window TFDV statistics cannot see.

A window's statistics average its spans (months), so a span loaded twice, one feature view
missing for ten days or a label collapsed to one value can hide inside bounds that hold over the
whole window. These checks profile each span on its own and compare it with the span before it:

- key uniqueness: every ``flight_id`` appears once in the window (not a TFDV statistic);
- rows per day of each span against the reference span(s), so a repeated load or a partial one
  stands out whatever the month's length;
- each feature's missing-value rate against the reference, reported per feature view;
- the label: not collapsed to one value, its positive rate inside the band of 2013 and without a
  jump from the reference.

The reference of a span is the previous span of the window; for the window's first span it is the
baseline's spans (their range, from the ``span_profile.json`` written next to the baseline's
statistics), else the baseline's whole-window statistics, else the months of 2013. Every limit is
calibrated from 2013 by ``infer_schema.calibrate_spans`` and lives in ``schema/calibration.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mlops import features as F
from mlops.artifacts import SPAN_PROFILE_FILE

DEFAULT_CALIBRATION = Path(__file__).resolve().parent / "schema" / "calibration.json"
CALIBRATION_KEY = "span_checks"
# Rows without a span column are profiled as one span of this name.
WHOLE_DATA = "(all)"
EXAMPLE_KEYS = 5

VIEW_OF: dict[str, str] = {f.name: f.source for f in F.FEATURES}


@dataclass
class SpanProfile:
    """What the checks measure on one span."""

    span: str
    rows: int
    rows_per_day: float
    missing: dict[str, float] = field(default_factory=dict)
    label_rate: float | None = None
    label_values: list[int] = field(default_factory=list)


@dataclass
class Reference:
    """What a span is compared with: one span, or the range over several.

    Attributes:
        name: Where the reference comes from, for the report (e.g. ``2013-02``).
        rows_per_day: (lowest, highest) rows per day, or None when unknown.
        missing: Highest missing-value rate per feature.
        label_rate: (lowest, highest) positive rate of the label, or None when unknown.
    """

    name: str
    rows_per_day: tuple[float, float] | None
    missing: dict[str, float]
    label_rate: tuple[float, float] | None


@dataclass(frozen=True)
class SpanLimits:
    """The calibrated limits (see ``infer_schema.calibrate_spans``)."""

    rows_per_day_change: float
    missing_rate_rise: dict[str, float]
    label_rate_change: float
    label_rate_band: tuple[float, float]
    reference_2013: Reference

    @classmethod
    def load(cls, path: Path = DEFAULT_CALIBRATION) -> SpanLimits:
        """Read the limits from the calibration file.

        Raises:
            ValueError: The file has no span calibration or a field is missing.
        """
        raw = json.loads(Path(path).read_text()).get(CALIBRATION_KEY)
        if not isinstance(raw, dict):
            raise ValueError(
                f"{path}: no '{CALIBRATION_KEY}' section; regenerate it with "
                "`python -m components.validate.infer_schema`"
            )
        try:
            ref = raw["reference_2013"]
            return cls(
                rows_per_day_change=float(raw["rows_per_day_change"]),
                missing_rate_rise={k: float(v) for k, v in raw["missing_rate_rise"].items()},
                label_rate_change=float(raw["label_rate_change"]),
                label_rate_band=(
                    float(raw["label_rate_band"][0]),
                    float(raw["label_rate_band"][1]),
                ),
                reference_2013=Reference(
                    "the months of 2013",
                    (float(ref["rows_per_day"][0]), float(ref["rows_per_day"][1])),
                    {k: float(v) for k, v in ref["missing"].items()},
                    (float(ref["label_rate"][0]), float(ref["label_rate"][1])),
                ),
            )
        except (KeyError, TypeError, IndexError) as err:
            raise ValueError(f"{path}: '{CALIBRATION_KEY}' lacks the field {err}") from None


def _days(span: str, frame: pd.DataFrame) -> float:
    """Days a span's rows cover: first to last event, whole days (a month's length without times).

    The covered days rather than the calendar month, so a span validated in part (one split of
    it) keeps its rate per day; rows lost inside the span still lower it.
    """
    if F.EVENT_TIMESTAMP in frame.columns and len(frame):
        times = pd.to_datetime(frame[F.EVENT_TIMESTAMP])
        return max(1.0, math.ceil((times.max() - times.min()) / pd.Timedelta(days=1)))
    try:
        return float(pd.Period(span, freq="M").days_in_month)
    except ValueError:
        return 1.0


def profile_spans(df: pd.DataFrame) -> dict[str, SpanProfile]:
    """Profile each span of ``df`` (rows grouped by its ``span`` column), in span order."""
    groups = (
        [(str(s), g) for s, g in df.groupby(F.SPAN, sort=True)]
        if F.SPAN in df.columns
        else [(WHOLE_DATA, df)]
    )
    out: dict[str, SpanProfile] = {}
    for span, frame in groups:
        missing = {n: float(frame[n].isna().mean()) for n in F.FEATURE_NAMES if n in frame}
        profile = SpanProfile(span, len(frame), len(frame) / _days(span, frame), missing)
        if F.LABEL in frame.columns:
            labels = frame[F.LABEL].dropna()
            profile.label_values = sorted(int(v) for v in labels.unique())
            profile.label_rate = float(labels.mean()) if len(labels) else None
        out[span] = profile
    return out


def write_profile(profiles: dict[str, SpanProfile], out_dir: Path) -> Path:
    """Write the profiles next to the statistics, so a later run can use them as its baseline."""
    path = out_dir / SPAN_PROFILE_FILE
    path.write_text(json.dumps({"spans": {s: asdict(p) for s, p in profiles.items()}}, indent=2))
    return path


def _point(profile: SpanProfile) -> Reference:
    rate = profile.label_rate
    return Reference(
        profile.span,
        (profile.rows_per_day, profile.rows_per_day),
        dict(profile.missing),
        None if rate is None else (rate, rate),
    )


def _envelope(name: str, profiles: list[SpanProfile]) -> Reference:
    rates = [p.label_rate for p in profiles if p.label_rate is not None]
    per_day = [p.rows_per_day for p in profiles]
    missing: dict[str, float] = {}
    for p in profiles:
        for feature, rate in p.missing.items():
            missing[feature] = max(missing.get(feature, 0.0), rate)
    return Reference(
        name, (min(per_day), max(per_day)), missing, (min(rates), max(rates)) if rates else None
    )


def baseline_reference(stats_path: Path | None, stats: Any) -> Reference | None:
    """The baseline's spans (their profile file), else its whole-window TFDV statistics.

    Args:
        stats_path: The baseline statistics (a file or the directory holding it).
        stats: The loaded baseline ``DatasetFeatureStatisticsList``.
    """
    if stats_path is None:
        return None
    folder = stats_path if stats_path.is_dir() else stats_path.parent
    profile_file = folder / SPAN_PROFILE_FILE
    if profile_file.is_file():
        spans = json.loads(profile_file.read_text()).get("spans", {})
        profiles = [SpanProfile(**p) for _, p in sorted(spans.items())]
        if profiles:
            names = sorted(spans)
            window = names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"
            return _envelope(f"baseline spans {window}", profiles)
    missing: dict[str, float] = {}
    label: tuple[float, float] | None = None
    for feat in stats.datasets[0].features:
        name = ".".join(feat.path.step)
        kind = "num_stats" if feat.HasField("num_stats") else "string_stats"
        common = getattr(feat, kind).common_stats
        total = common.num_missing + common.num_non_missing
        if name == F.LABEL and feat.HasField("num_stats"):
            label = (feat.num_stats.mean, feat.num_stats.mean)
        elif total:
            missing[name] = common.num_missing / total
    # Whole-window statistics hold no span count, so rows per day cannot be compared.
    return Reference("baseline statistics (whole window)", None, missing, label)


def duplicated_keys(df: pd.DataFrame) -> tuple[int, int, list[str], list[Any]]:
    """(keys seen more than once, extra rows, spans holding them, first example keys)."""
    if F.FLIGHT_ID not in df.columns:
        return 0, 0, [], []
    keys = df[F.FLIGHT_ID]
    repeated = keys.duplicated(keep=False)
    if not repeated.any():
        return 0, 0, [], []
    dup = keys[repeated]
    spans = sorted(str(s) for s in df.loc[repeated, F.SPAN].unique()) if F.SPAN in df else []
    examples = sorted(dup.unique().tolist())[:EXAMPLE_KEYS]
    return int(dup.nunique()), int(keys.duplicated().sum()), spans, examples


@dataclass
class SpanFinding:
    """One span check that failed: the anomaly fields plus the span."""

    feature: str
    kind: str
    description: str
    span: str


def _span_of(lo: float, hi: float, fmt: str) -> str:
    return format(lo, fmt) if lo == hi else f"{format(lo, fmt)}..{format(hi, fmt)}"


def _outside(value: float, lo: float, hi: float) -> float:
    """How far ``value`` lies outside ``lo..hi`` (negative below, 0 inside)."""
    return value - hi if value > hi else value - lo if value < lo else 0.0


def _check_rows(p: SpanProfile, ref: Reference, limits: SpanLimits) -> list[SpanFinding]:
    if ref.rows_per_day is None or p.span == WHOLE_DATA:
        return []
    lo, hi = ref.rows_per_day
    change = _outside(p.rows_per_day, lo, hi) / (hi if p.rows_per_day > hi else lo)
    if abs(change) <= limits.rows_per_day_change:
        return []
    text = (
        f"span {p.span}: {p.rows_per_day:.1f} rows per day ({p.rows} rows) against "
        f"{_span_of(lo, hi, '.1f')} in {ref.name}: {change:+.1%}, over the "
        f"±{limits.rows_per_day_change:.1%} limit (rows repeated or lost)"
    )
    return [SpanFinding("(rows)", "row count change", text, p.span)]


def _check_missing(p: SpanProfile, ref: Reference, limits: SpanLimits) -> list[SpanFinding]:
    rises: dict[str, list[str]] = {}
    for name, rate in p.missing.items():
        before = ref.missing.get(name)
        limit = limits.missing_rate_rise.get(name)
        if before is None or limit is None or rate - before <= limit:
            continue
        rises.setdefault(VIEW_OF[name], []).append(
            f"{name} {rate:.1%} missing (was {before:.1%}, limit +{limit * 100:.1f} pp)"
        )
    found = []
    for view, parts in sorted(rises.items()):
        text = (
            f"span {p.span}: feature view {view} missing for part of the span: "
            f"{', '.join(parts)}; compared with {ref.name}"
        )
        found.append(SpanFinding(view, "missing-value jump", text, p.span))
    return found


def _check_label(p: SpanProfile, ref: Reference, limits: SpanLimits) -> list[SpanFinding]:
    if p.label_rate is None:
        return []
    rate, (lo, hi) = p.label_rate, limits.label_rate_band
    if len(p.label_values) < 2:
        text = f"span {p.span}: all {p.rows} labels are {p.label_values[0]}; the label has a "
        return [SpanFinding(F.LABEL, "label collapsed", text + "single value", p.span)]
    if not lo <= rate <= hi:
        text = (
            f"span {p.span}: {rate:.1%} of labels are 1, outside {lo:.1%}..{hi:.1%} "
            "(the months of 2013 with a margin)"
        )
        return [SpanFinding(F.LABEL, "label rate out of range", text, p.span)]
    if ref.label_rate is None:
        return []
    jump = _outside(rate, *ref.label_rate)
    if abs(jump) <= limits.label_rate_change:
        return []
    text = (
        f"span {p.span}: {rate:.1%} of labels are 1 against "
        f"{_span_of(*ref.label_rate, '.1%')} in {ref.name}: {jump * 100:+.1f} pp, "
        f"over the ±{limits.label_rate_change * 100:.1f} pp limit"
    )
    return [SpanFinding(F.LABEL, "label rate jump", text, p.span)]


def _check_keys(df: pd.DataFrame) -> list[SpanFinding]:
    count, extra, spans, examples = duplicated_keys(df)
    if not count:
        return []
    where = f" in span(s) {', '.join(spans)}" if spans else ""
    text = (
        f"{count} {F.FLIGHT_ID} values appear more than once{where} ({extra} extra rows, "
        f"{extra / len(df):.1%} of the window), e.g. {', '.join(str(k) for k in examples)}"
    )
    return [SpanFinding(F.FLIGHT_ID, "duplicated keys", text, ", ".join(spans))]


def check_spans(
    df: pd.DataFrame,
    profiles: dict[str, SpanProfile],
    baseline: Reference | None,
    limits: SpanLimits,
    check_label: bool = True,
) -> tuple[list[SpanFinding], dict[str, str]]:
    """Run every span check on the window ``df``.

    Args:
        df: The window's rows (all splits together).
        profiles: :func:`profile_spans` of ``df``.
        baseline: The first span's reference (:func:`baseline_reference`); None compares it with
            the months of 2013.
        limits: The calibrated limits.
        check_label: Check the label (False for serving data, which has none).

    Returns:
        (findings, the reference name each span was compared with).
    """
    found = _check_keys(df)
    ref = baseline or limits.reference_2013
    compared: dict[str, str] = {}
    for profile in profiles.values():
        compared[profile.span] = ref.name
        span_found = _check_rows(profile, ref, limits) + _check_missing(profile, ref, limits)
        if check_label:
            span_found += _check_label(profile, ref, limits)
        found += span_found
        # A faulty span is no reference for the next one: keep comparing with the last good one.
        if not span_found:
            ref = _point(profile)
    return found, compared
