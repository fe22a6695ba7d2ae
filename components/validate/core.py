"""Validate core: TFDV statistics, anomalies against the curated schema, drift and skew.

The verdict blocks on schema anomalies (an unknown category, a missing column, a type change, a
value out of range, too many missing values). Drift against a baseline (the production model's
training statistics, or any given statistics) and skew against serving statistics are measured
per feature with the schema's comparators (L-infinity for categorical features, Jensen-Shannon
divergence for numeric ones) and reported; crossing a comparator threshold blocks only when
``block_on_drift`` is set, because real data drifts with the seasons and a drift alarm calls for
retraining, not for refusing it.

Whole-window statistics cannot see a fault confined to one span (month), so the span checks of
``span_checks.py`` block too: repeated ``flight_id`` keys, a change of rows per day, a jump of a
feature view's missing values and a collapsed or jumping label, each per span against the span
before it.
"""

from __future__ import annotations

import html
import json
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from components.validate.span_checks import (
    DEFAULT_CALIBRATION,
    SpanLimits,
    baseline_reference,
    check_spans,
    profile_spans,
    write_profile,
)
from mlops import features as F
from mlops.artifacts import (
    ANOMALIES_FILE,
    SCHEMA_FILE,
    STATS_FILE,
    STATS_HTML_FILE,
    STATS_TEXT_FILE,
    VERDICT_FILE,
    packaged_schema,
)

# Package data of the base package: serving and the monitor load the same file.
DEFAULT_SCHEMA = packaged_schema()
REPORT_FILE = "report.md"


@dataclass
class Anomaly:
    """One thing wrong with the data."""

    feature: str
    kind: str
    description: str
    span: str = ""


@dataclass
class Verdict:
    """The outcome of validation."""

    ok: bool
    anomalies: list[Anomaly] = field(default_factory=list)
    drift: dict[str, float] = field(default_factory=dict)
    drift_thresholds: dict[str, float] = field(default_factory=dict)
    drifted: list[str] = field(default_factory=list)
    skew: dict[str, float] = field(default_factory=dict)
    skew_thresholds: dict[str, float] = field(default_factory=dict)
    skewed: list[str] = field(default_factory=list)
    rows: int = 0
    baseline: str = ""
    spans: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def to_json(self) -> str:
        """The verdict as JSON (read by the validation gate and push)."""
        return json.dumps(self.to_dict(), indent=2)

    def summary(self) -> str:
        """One line per anomaly, e.g. ``carrier: unexpected string values ...``."""
        return "; ".join(f"{a.feature}: {a.description}" for a in self.anomalies)

    def to_metadata(self) -> dict[str, Any]:
        """The verdict artifact's metadata; :meth:`VerdictMetadata.from_metadata` reads it."""
        return VerdictMetadata(
            ok=self.ok,
            anomalies=len(self.anomalies),
            drifted=list(self.drifted),
            summary=self.summary(),
            baseline=self.baseline,
        ).to_metadata()

    def report_markdown(self) -> str:
        """A human-readable report: verdict, anomalies per feature, drift and skew tables."""
        lines = [f"# Data validation: {'PASSED' if self.ok else 'FAILED'}", ""]
        lines.append(f"{self.rows} rows checked against the curated schema.")
        if self.anomalies:
            lines += ["", "## Anomalies", "", "| feature | anomaly | what is wrong |",
                      "|---|---|---|"]  # fmt: skip
            lines += [f"| {a.feature} | {a.kind} | {a.description} |" for a in self.anomalies]
        for title, values, limits, crossed in (
            ("Drift vs " + (self.baseline or "baseline"), self.drift, self.drift_thresholds,
             self.drifted),
            ("Skew vs serving", self.skew, self.skew_thresholds, self.skewed),
        ):  # fmt: skip
            if values:
                lines += ["", f"## {title}", "", "| feature | value | threshold | crossed |",
                          "|---|---|---|---|"]  # fmt: skip
                for name in sorted(values, key=lambda n: -values[n]):
                    mark = "**yes**" if name in crossed else "no"
                    lines.append(f"| {name} | {values[name]:.4f} | {limits.get(name, 0):.4f} | "
                                 f"{mark} |")  # fmt: skip
        if self.spans:
            lines += [
                "",
                "## Spans",
                "",
                "| span | rows | rows per day | label rate | compared with | findings |",
                "|---|---|---|---|---|---|",
            ]
            for span, info in self.spans.items():
                rate = info.get("label_rate")
                kinds = sorted({a.kind for a in self.anomalies if span in a.span.split(", ")})
                lines.append(
                    f"| {span} | {info.get('rows', 0)} | "
                    f"{info.get('rows_per_day', 0.0):.1f} | "
                    f"{'-' if rate is None else f'{rate:.1%}'} | "
                    f"{info.get('compared_with', '')} | "
                    f"{'**' + ', '.join(kinds) + '**' if kinds else 'ok'} |"
                )
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class VerdictMetadata:
    """What the verdict artifact's metadata says: the contract between validate and readers
    of a run (``mlops.runner``).

    Attributes:
        ok: Whether the data passed.
        anomalies: How many anomalies were found.
        drifted: Features whose drift crossed their threshold.
        summary: One line per anomaly (:meth:`Verdict.summary`).
        baseline: The statistics drift was measured against ('' = none).
    """

    ok: bool
    anomalies: int
    drifted: list[str]
    summary: str
    baseline: str

    def to_metadata(self) -> dict[str, Any]:
        """KFP metadata: scalars and strings only (lists joined with commas)."""
        return {
            "ok": self.ok,
            "anomalies": self.anomalies,
            "drifted": ",".join(self.drifted),
            "summary": self.summary,
            "baseline": self.baseline,
        }

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> VerdictMetadata | None:
        """Read :meth:`to_metadata`'s output back; ``None`` when it holds no verdict."""
        if "ok" not in meta:
            return None
        drifted = str(meta.get("drifted") or "")
        return cls(
            ok=bool(meta["ok"]),
            anomalies=int(meta.get("anomalies") or 0),
            drifted=drifted.split(",") if drifted else [],
            summary=str(meta.get("summary") or ""),
            baseline=str(meta.get("baseline") or ""),
        )


def load_schema(path: Path = DEFAULT_SCHEMA) -> Any:
    """The curated TFDV schema."""
    import tensorflow_data_validation as tfdv

    if not Path(path).is_file():
        raise FileNotFoundError(f"schema not found: {path}")
    return tfdv.load_schema_text(str(path))


def stats_from_dataframe(df: Any) -> Any:
    """TFDV statistics of the contract's columns present in ``df`` (features and label)."""
    import tensorflow_data_validation as tfdv

    columns = [c for c in (*F.FEATURE_NAMES, F.LABEL) if c in df.columns]
    frame = df[columns].reset_index(drop=True)
    for name in columns:
        # Object columns of a categorical feature keep None for missing; numbers stay numbers.
        if frame[name].dtype == object and name in F.CATEGORICAL_FEATURES:
            frame[name] = frame[name].where(frame[name].notna(), None)
    return tfdv.generate_statistics_from_dataframe(frame)


def load_statistics(path: Path) -> Any:
    """Statistics written by :func:`validate` (a file, or a directory holding one).

    Reads the binary ``DatasetFeatureStatisticsList`` this module writes; other files (TFDV's
    TFRecord or text outputs) go through ``tfdv.load_statistics``.
    """
    import tensorflow_data_validation as tfdv
    from google.protobuf.message import DecodeError
    from tensorflow_metadata.proto.v0 import statistics_pb2

    path = Path(path)
    if path.is_dir():
        path = path / STATS_FILE
    try:
        stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(path.read_bytes())
        if stats.datasets:
            return stats
    except DecodeError:
        pass
    return tfdv.load_statistics(str(path))


def _anomalies(proto: Any) -> list[Anomaly]:
    out = []
    for feature, info in sorted(proto.anomaly_info.items()):
        kinds = sorted({r.short_description for r in info.reason}) or [info.short_description]
        out.append(Anomaly(feature, "; ".join(kinds), info.description))
    if proto.HasField("dataset_anomaly_info"):
        info = proto.dataset_anomaly_info
        out.append(Anomaly("(dataset)", info.short_description, info.description))
    return out


def compare(
    stats: Any, reference: Any, schema: Any, kind: Literal["drift", "skew"] = "drift"
) -> tuple[dict[str, float], dict[str, float], list[str]]:
    """Measure drift (vs previous statistics) or skew (vs serving statistics) per feature.

    Returns:
        (value per feature, threshold per feature, features over their threshold).
    """
    import tensorflow_data_validation as tfdv

    if kind == "drift":
        proto = tfdv.validate_statistics(stats, schema, previous_statistics=reference)
    else:
        proto = tfdv.validate_statistics(stats, schema, serving_statistics=reference)
    values: dict[str, float] = {}
    limits: dict[str, float] = {}
    for info in proto.drift_skew_info:
        name = ".".join(info.path.step)
        for m in info.drift_measurements if kind == "drift" else info.skew_measurements:
            values[name] = max(values.get(name, 0.0), float(m.value))
            limits[name] = float(m.threshold)
    crossed = sorted(n for n in values if values[n] > limits[n])
    return values, limits, crossed


def stats_html(stats: Any, verdict: Verdict | None = None) -> str:
    """A self-contained HTML view of the statistics: one table row per feature.

    With a ``verdict``, a table of its spans and their findings comes first.
    """
    rows = []
    for feat in stats.datasets[0].features:
        name = ".".join(feat.path.step)
        if feat.HasField("num_stats"):
            s = feat.num_stats
            common = s.common_stats
            detail = (f"mean {s.mean:.3f}, std {s.std_dev:.3f}, min {s.min:.3f}, "
                      f"median {s.median:.3f}, max {s.max:.3f}, zeros {s.num_zeros}")  # fmt: skip
        else:
            s = feat.string_stats
            common = s.common_stats
            top = ", ".join(f"{v.value} ({int(v.frequency)})" for v in s.top_values[:5])
            detail = f"{s.unique} unique; top: {top}"
        total = common.num_non_missing + common.num_missing
        missing = common.num_missing / total if total else 0.0
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{common.num_non_missing}</td>"
                    f"<td>{missing:.1%}</td><td>{html.escape(detail)}</td></tr>")  # fmt: skip
    n = stats.datasets[0].num_examples
    spans = ""
    if verdict is not None and verdict.spans:
        cells = []
        for span, info in verdict.spans.items():
            found = [a for a in verdict.anomalies if span in a.span.split(", ")]
            text = "<br>".join(html.escape(a.description) for a in found) or "ok"
            rate = info.get("label_rate")
            cells.append(
                f"<tr><td>{html.escape(span)}</td><td>{info.get('rows', 0)}</td>"
                f"<td>{'-' if rate is None else f'{rate:.1%}'}</td>"
                f"<td>{html.escape(str(info.get('compared_with', '')))}</td>"
                f"<td>{text}</td></tr>"
            )
        spans = (
            "<h2>Spans</h2><table><tr><th>span</th><th>rows</th><th>label rate</th>"
            f"<th>compared with</th><th>findings</th></tr>{''.join(cells)}</table>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Statistics</title><style>"
        "body{font-family:system-ui,sans-serif}td,th{border:1px solid #ddd;padding:2px 6px;"
        f"font-size:13px}}table{{border-collapse:collapse}}</style></head><body>{spans}"
        f"<h2>Statistics of {n} examples</h2><table><tr><th>feature</th><th>present</th>"
        f"<th>missing</th><th>distribution</th></tr>{''.join(rows)}</table></body></html>"
    )


def validate(
    data_paths: Path | list[Path],
    out_dir: Path,
    schema_path: Path = DEFAULT_SCHEMA,
    previous_stats_path: Path | None = None,
    serving_stats_path: Path | None = None,
    block_on_drift: bool = False,
    environment: str = "TRAINING",
    calibration_path: Path = DEFAULT_CALIBRATION,
    beam_pipeline_args: list[str] | None = None,
) -> Verdict:
    """Validate a data span and write statistics, anomalies, the verdict and reports.

    Args:
        data_paths: The span's data (parquet files, e.g. the train and eval splits).
        out_dir: Where to write ``statistics.pb``, ``schema.pbtxt``, ``anomalies.pbtxt``,
            ``verdict.json``, ``statistics.html`` and ``report.md``.
        schema_path: The curated schema.
        previous_stats_path: Baseline statistics for drift (e.g. the production model's).
        serving_stats_path: Statistics of served requests, for skew.
        block_on_drift: Fail the verdict when a drift or skew comparator is crossed.
        environment: Schema environment of the data (``TRAINING`` or ``SERVING``).
        calibration_path: The calibrated limits of the span checks.
        beam_pipeline_args: When set, the statistics run on Beam with these options
            (``beam_stats.stats_from_parquet_beam``) instead of in memory; the span checks
            still read the span into memory.
    """
    import pandas as pd
    import tensorflow_data_validation as tfdv

    schema = load_schema(schema_path)
    paths = [data_paths] if isinstance(data_paths, Path) else list(data_paths)
    df = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    if beam_pipeline_args:
        from components.validate.beam_stats import stats_from_parquet_beam

        stats = stats_from_parquet_beam(paths, beam_pipeline_args)
    else:
        stats = stats_from_dataframe(df)
    anomalies_proto = tfdv.validate_statistics(stats, schema, environment=environment)
    anomalies = _anomalies(anomalies_proto)
    verdict = Verdict(ok=not anomalies, anomalies=anomalies, rows=len(df))
    baseline = None
    if previous_stats_path is not None:
        previous = load_statistics(previous_stats_path)
        verdict.drift, verdict.drift_thresholds, verdict.drifted = compare(
            stats, previous, schema, "drift"
        )
        verdict.baseline = str(previous_stats_path)
        baseline = baseline_reference(Path(previous_stats_path), previous)
    profiles = profile_spans(df)
    findings, compared = check_spans(
        df, profiles, baseline, SpanLimits.load(calibration_path), environment == "TRAINING"
    )
    verdict.anomalies += [Anomaly(f.feature, f.kind, f.description, f.span) for f in findings]
    verdict.ok = not verdict.anomalies
    verdict.spans = {
        s: {
            "rows": p.rows,
            "rows_per_day": p.rows_per_day,
            "label_rate": p.label_rate,
            "compared_with": compared[s],
        }
        for s, p in profiles.items()
    }
    if serving_stats_path is not None:
        verdict.skew, verdict.skew_thresholds, verdict.skewed = compare(
            stats, load_statistics(serving_stats_path), schema, "skew"
        )
    if block_on_drift and (verdict.drifted or verdict.skewed):
        _block_on_drift(verdict)
    _write_outputs(out_dir, stats, schema, anomalies_proto, profiles, verdict)
    return verdict


def _block_on_drift(verdict: Verdict) -> None:
    """Fail the verdict with one anomaly per feature over its drift or skew threshold."""
    verdict.ok = False
    for name in verdict.drifted:
        verdict.anomalies.append(Anomaly(name, "drift", (
            f"drift {verdict.drift[name]:.4f} over threshold "
            f"{verdict.drift_thresholds[name]:.4f}")))  # fmt: skip
    for name in verdict.skewed:
        verdict.anomalies.append(Anomaly(name, "skew", (
            f"skew {verdict.skew[name]:.4f} over threshold "
            f"{verdict.skew_thresholds[name]:.4f}")))  # fmt: skip


def _write_outputs(
    out_dir: Path, stats: Any, schema: Any, anomalies: Any, profiles: Any, verdict: Verdict
) -> None:
    """Write statistics (binary and text), schema, anomalies, span profile, verdict, reports."""
    import tensorflow_data_validation as tfdv

    out_dir.mkdir(parents=True, exist_ok=True)
    tfdv.write_stats_text(stats, str(out_dir / STATS_TEXT_FILE))
    (out_dir / STATS_FILE).write_bytes(stats.SerializeToString())
    tfdv.write_schema_text(schema, str(out_dir / SCHEMA_FILE))
    tfdv.write_anomalies_text(anomalies, str(out_dir / ANOMALIES_FILE))
    write_profile(profiles, out_dir)
    (out_dir / VERDICT_FILE).write_text(verdict.to_json())
    (out_dir / STATS_HTML_FILE).write_text(stats_html(stats, verdict))
    (out_dir / REPORT_FILE).write_text(verdict.report_markdown())


def production_statistics(registry_uri: str, model_name: str) -> str | None:
    """The training statistics of the registry's production version, if it has readable ones."""
    from mlops.registry import ModelRegistry

    uri = ModelRegistry(registry_uri).production_statistics(model_name)
    return uri if uri is not None and Path(uri).exists() else None


@dataclass(frozen=True)
class ValidateOutputs:
    """Where the validate component's artifacts go.

    Attributes:
        statistics: Directory of everything :func:`validate` writes (statistics, schema, ...).
        anomalies: Directory that gets a copy of ``anomalies.pbtxt``.
        verdict: Directory that gets a copy of ``verdict.json``.
        statistics_view: File that gets the statistics HTML.
        report: File that gets the Markdown report.
    """

    statistics: Path
    anomalies: Path
    verdict: Path
    statistics_view: Path
    report: Path


def run_validation(
    data_paths: list[Path],
    outputs: ValidateOutputs,
    registry_uri: str,
    model_name: str,
    baseline_statistics_uri: str = "",
    serving_statistics_uri: str = "",
    block_on_drift: bool = False,
    beam_pipeline_args: list[str] | None = None,
) -> Verdict:
    """The validate step: pick the drift baseline, validate, lay the results out as artifacts.

    Drift is measured against ``baseline_statistics_uri`` or, when empty, against the training
    statistics of the registry's production version (if there is one).

    Args:
        data_paths: The span's splits (parquet).
        outputs: The artifact paths.
        registry_uri: The model registry holding the production version.
        model_name: The registered model.
        baseline_statistics_uri: Statistics to measure drift against ('' = production's).
        serving_statistics_uri: Statistics of served requests, for skew ('' = no skew check).
        block_on_drift: Fail the verdict when a drift or skew comparator is crossed.
        beam_pipeline_args: Beam options for the statistics (empty = in memory).
    """
    baseline = baseline_statistics_uri or production_statistics(registry_uri, model_name)
    out = outputs.statistics
    verdict = validate(
        data_paths,
        out,
        previous_stats_path=Path(baseline) if baseline else None,
        serving_stats_path=Path(serving_statistics_uri) if serving_statistics_uri else None,
        block_on_drift=block_on_drift,
        beam_pipeline_args=beam_pipeline_args,
    )
    for name, folder in ((ANOMALIES_FILE, outputs.anomalies), (VERDICT_FILE, outputs.verdict)):
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / name, folder / name)
    shutil.copy(out / STATS_HTML_FILE, outputs.statistics_view)
    shutil.copy(out / REPORT_FILE, outputs.report)
    return verdict
