"""Monitoring job: skew and drift of served requests and live per-slice quality, for Prometheus.

Reads the serving request log (JSON lines written by ``serving.transformer``: request id, row,
model version, the features used, the score; every file of it, rotated and per-pod files
included, on a local path or any fsspec URI such as ``gs://`` or ``s3://``), computes TFDV
statistics of the served features and compares them with the schema's comparators:

- **skew**: served features vs the production model's training statistics;
- **drift**: this window vs the previous window (when given).

A feature is judged only when both sides hold at least ``MonitorConfig.min_samples`` values of
it: the schema's thresholds were calibrated on whole months, and a few hundred requests differ
from a month by sampling noise alone. Below that the feature is reported as ``insufficient data:
n=...`` (``skew_insufficient`` / ``drift_insufficient``), not as a finding, and no gauge is
exported for it. Contract features the schema has no comparator for are listed in
``not_compared``, so a feature the monitor cannot see is visible rather than silently quiet.

Feedback labels (JSON lines ``{"request_id", "row", "label"}``) joined to the logged predictions
give live per-slice AUC and accuracy. Results are written as JSON and exported as Prometheus
gauges (``mlops.telemetry``), pushed to a Pushgateway when one is given; the alert rules fire
from there, and ``mlops retrain-if-needed`` acts on the alerts.

The push has a timeout per attempt and is retried with exponential backoff on a timeout, a
connection error, 429 or a 5xx (a ``PUT`` replaces the job's group: repeating it is safe); a 4xx
is raised at once. When every attempt fails, :func:`push_metrics` raises
``mlops.retrying.RetryError`` naming the gateway: the monitoring step fails (after its results
were written to its output directory) and Prometheus keeps the previous push's values.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from mlops import features as F
from mlops import telemetry as T
from mlops.artifacts import MONITOR_FILE, STATS_FILE
from mlops.registry import download_tree

log = logging.getLogger(__name__)

# Fewest non-missing values each side needs before a feature's skew or drift is judged. The
# schema's thresholds (L-infinity 0.05 on vocabularies, Jensen-Shannon on histograms) were set on
# whole months of flights; a 300-request sample of the very month the model was trained on
# crossed them on 5 of 35 features from sampling noise alone (issue #16; measured in
# tests/integration/test_monitoring_drift.py), while 1,000 values bring a share's standard error
# to 1.6 points or less, against the 5-point L-infinity bound.
DEFAULT_MIN_SAMPLES = 1_000


class MonitorConfig(BaseModel):
    """Settings of the monitoring job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_samples: int = Field(
        DEFAULT_MIN_SAMPLES,
        ge=1,
        description="Fewest non-missing values of a feature on each side for its skew or drift "
        "to be judged; fewer is reported as insufficient data, not as a finding.",
    )


@dataclass
class MonitorResult:
    """What one monitoring window found."""

    requests: int
    model_versions: list[str]
    skew: dict[str, float] = field(default_factory=dict)
    skew_thresholds: dict[str, float] = field(default_factory=dict)
    skewed: list[str] = field(default_factory=list)
    drift: dict[str, float] = field(default_factory=dict)
    drift_thresholds: dict[str, float] = field(default_factory=dict)
    drifted: list[str] = field(default_factory=list)
    skew_insufficient: dict[str, str] = field(default_factory=dict)
    drift_insufficient: dict[str, str] = field(default_factory=dict)
    not_compared: list[str] = field(default_factory=list)
    labelled: int = 0
    slice_quality: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        """JSON form, written next to the statistics."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def request_log_files(source: str | Path) -> list[str]:
    """Every file of a request log, sorted, as paths (local) or URIs (remote).

    Args:
        source: A directory (each ``*.jsonl`` in it: the per-pod files of the transformer's
            replicas and their rotated files), a glob, or one ``.jsonl`` file together with the
            files it was rotated to (``<stem>-<UTC stamp>.jsonl``). Local or any fsspec URI.

    Raises:
        FileNotFoundError: Nothing matches.
    """
    fs, path = fsspec.core.url_to_fs(str(source))
    if any(c in path for c in "*?["):  # a glob
        found = fs.glob(path)
    elif fs.isdir(path):
        found = fs.glob(posixpath.join(path, "*.jsonl"))
    elif fs.isfile(path):
        stem, ext = posixpath.splitext(path)
        # Only this file's rotations: another log may share the stem as a prefix.
        rotated = re.compile(re.escape(stem) + r"-\d{8}T\d{12}Z" + re.escape(ext))
        found = [path, *(p for p in fs.glob(f"{stem}-*{ext}") if rotated.fullmatch(p))]
    else:
        found = []
    files = sorted({p for p in found if fs.isfile(p)})
    if not files:
        raise FileNotFoundError(f"request log not found: {source}")
    local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    return files if local else [fs.unstrip_protocol(p) for p in files]


def _read_lines(uri: str) -> list[bytes]:
    """Complete lines of one log file; a last line still being written is left for next time."""
    with fsspec.open(uri, "rb") as fh:
        lines = fh.read().split(b"\n")
    return [line for line in lines[:-1] if line.strip()]


def read_request_log(source: str | Path) -> pd.DataFrame:
    """The logged requests as one row per served instance: features, score, ids.

    Args:
        source: The request log, as :func:`request_log_files` takes it.

    Raises:
        FileNotFoundError: The log does not exist.
        ValueError: The log holds no requests.
    """
    rows = []
    for uri in request_log_files(source):
        try:
            lines = _read_lines(uri)
        except FileNotFoundError:  # rotated away (the serving side keeps a bounded number)
            log.warning("request log file %s was deleted before it was read", uri)
            continue
        for line in lines:
            rec = json.loads(line)
            rows.append({**rec.get("features", {}), "request_id": rec["request_id"],
                         "row": rec.get("row", 0), "score": rec["score"],
                         "model_version": str(rec.get("model_version", ""))})  # fmt: skip
    if not rows:
        raise ValueError(f"request log {source} holds no requests")
    df = pd.DataFrame(rows)
    for name in F.NUMERIC_FEATURES:
        df[name] = pd.to_numeric(df.get(name), errors="coerce").astype("float64")
    return df


def local_copy(uri: str | Path, workdir: Path) -> Path:
    """A local path for ``uri``: itself when local, else a download of it (file or directory).

    TFDV reads statistics by local path; a ``gs://`` URI wrapped in ``Path`` would become
    ``gs:/...``, so remote ones are copied into ``workdir`` first.
    """
    text = str(uri)
    if "://" not in text or text.startswith("file://"):
        return Path(text.removeprefix("file://"))
    fs, path = fsspec.core.url_to_fs(text)
    path = path.rstrip("/")
    dest = workdir / posixpath.basename(path)
    if fs.isdir(path):
        download_tree(fs, path, dest)
    else:
        workdir.mkdir(parents=True, exist_ok=True)
        fs.get_file(path, str(dest))
    return dest


def read_feedback(path: str | Path) -> pd.DataFrame:
    """Feedback labels: one JSON object per line with ``request_id``, ``row``, ``label``.

    ``path`` is a local path or any fsspec URI.
    """
    with fsspec.open(str(path), "rt") as fh:
        records = [json.loads(line) for line in fh.read().splitlines() if line.strip()]
    return pd.DataFrame(records, columns=["request_id", "row", "label"])


def slice_quality(
    served: pd.DataFrame, threshold: float = F.DECISION_THRESHOLD
) -> list[dict[str, Any]]:
    """AUC and accuracy overall and per bounded slice, on rows that have a label.

    Slices are derived by ``mlops.features.slice_frame``: a row without an hour counts as
    ``"other"``, as it does in the serving metrics.
    """
    from components.evaluate.metrics import binary_metrics

    df = served.dropna(subset=["label"])
    slices = F.slice_frame(df, bounded=True)
    out = []
    groups: list[tuple[str, str, pd.DataFrame]] = [("all", "all", df)]
    for key in F.SLICE_KEYS:
        groups += [(key, str(value), part) for value, part in df.groupby(slices[key])]
    for key, value, part in groups:
        m = binary_metrics(part["label"].to_numpy(int), part["score"].to_numpy(float), threshold)
        out.append({"slice_key": key, "slice_value": value, "count": len(part),
                    "auc": m.auc, "accuracy": m.accuracy})  # fmt: skip
    return out


def value_counts(stats: Any) -> dict[str, int]:
    """Non-missing values per feature of TFDV statistics (their first dataset)."""
    counts: dict[str, int] = {}
    if not stats.datasets:
        return counts
    for feat in stats.datasets[0].features:
        kind = "num_stats" if feat.HasField("num_stats") else "string_stats"
        counts[".".join(feat.path.step)] = int(getattr(feat, kind).common_stats.num_non_missing)
    return counts


def judge(
    measured: tuple[dict[str, float], dict[str, float], list[str]],
    counts: tuple[dict[str, int], dict[str, int]],
    sides: tuple[str, str],
    min_samples: int,
) -> tuple[dict[str, float], dict[str, float], list[str], dict[str, str]]:
    """Keep the features both sides hold ``min_samples`` values of; report the others.

    Args:
        measured: ``compare``'s (value, threshold, crossed) of the features.
        counts: Non-missing values per feature on each side.
        sides: Names of the two sides, for the report (e.g. ``("served", "training")``).
        min_samples: Fewest values each side needs.

    Returns:
        (values, thresholds, crossed) of the judged features, and ``insufficient data: n=...``
        per feature left unjudged.
    """
    values, limits, crossed = measured
    insufficient: dict[str, str] = {}
    for name in list(values):
        n = [c.get(name, 0) for c in counts]
        if min(n) < min_samples:
            insufficient[name] = (
                f"insufficient data: n={n[0]} {sides[0]}, n={n[1]} {sides[1]} "
                f"(each side needs {min_samples})"
            )
    kept = {n: v for n, v in values.items() if n not in insufficient}
    return (
        kept,
        {n: t for n, t in limits.items() if n in kept},
        [n for n in crossed if n in kept],
        insufficient,
    )


def run_monitor(
    request_log: str | Path,
    training_stats: str | Path,
    out_dir: Path,
    previous_stats: str | Path | None = None,
    feedback: str | Path | None = None,
    schema_path: Path | None = None,
    threshold: float = F.DECISION_THRESHOLD,
    config: MonitorConfig | None = None,
) -> MonitorResult:
    """Compute skew, drift and live quality for one window of served requests.

    Inputs other than ``out_dir`` and ``schema_path`` are local paths or fsspec URIs.

    Args:
        request_log: The serving request log of the window (see :func:`request_log_files`).
        training_stats: Statistics of the production model's training data (from the registry).
        out_dir: Where to write ``statistics.pb`` of the window and ``monitor.json``.
        previous_stats: The previous window's statistics, for drift.
        feedback: Labels for served rows, for live quality.
        schema_path: The curated schema (default: the checked-in one).
        threshold: Decision threshold of the live accuracy.
        config: The job's settings (the minimum sample size); defaults by default.
    """
    from components.validate.core import (
        DEFAULT_SCHEMA,
        compare,
        load_schema,
        load_statistics,
        stats_from_dataframe,
    )

    cfg = config or MonitorConfig()
    served = read_request_log(request_log)
    schema = load_schema(schema_path or DEFAULT_SCHEMA)
    stats = stats_from_dataframe(served)
    result = MonitorResult(requests=len(served),
                           model_versions=sorted(served["model_version"].unique()))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="monitor-stats-") as tmp:
        # TFDV measures skew from training statistics towards serving statistics.
        training = load_statistics(local_copy(training_stats, Path(tmp) / "training"))
        served_n = value_counts(stats)
        result.skew, result.skew_thresholds, result.skewed, result.skew_insufficient = judge(
            compare(training, stats, schema, "skew"),
            (served_n, value_counts(training)),
            ("served", "training"),
            cfg.min_samples,
        )
        compared = set(result.skew) | set(result.skew_insufficient)
        if previous_stats is not None:
            previous = load_statistics(local_copy(previous_stats, Path(tmp) / "previous"))
            result.drift, result.drift_thresholds, result.drifted, result.drift_insufficient = (
                judge(
                    compare(stats, previous, schema, "drift"),
                    (served_n, value_counts(previous)),
                    ("served", "previous window"),
                    cfg.min_samples,
                )
            )
            compared |= set(result.drift) | set(result.drift_insufficient)
    # Every contract feature is expected to be compared; one the schema has no comparator for
    # would stay quiet whatever it does.
    result.not_compared = [n for n in F.FEATURE_NAMES if n not in compared]
    if feedback is not None:
        labels = read_feedback(feedback)
        joined = served.merge(labels, on=["request_id", "row"], how="left")
        result.labelled = int(joined["label"].notna().sum())
        if result.labelled:
            result.slice_quality = slice_quality(joined, threshold)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / STATS_FILE).write_bytes(stats.SerializeToString())
    (out_dir / MONITOR_FILE).write_text(result.to_json())
    return result


def export_metrics(result: MonitorResult, model: str) -> Any:
    """The result as a Prometheus registry of gauges (bounded labels only)."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    drift = Gauge(T.FEATURE_DRIFT, "Drift or skew of a feature (L-infinity or JS divergence).",
                  ["model", "feature", "comparison"], registry=registry)  # fmt: skip
    limit = Gauge(T.FEATURE_DRIFT_THRESHOLD, "Threshold of the feature's comparator.",
                  ["model", "feature", "comparison"], registry=registry)  # fmt: skip
    quality = Gauge(T.SLICE_QUALITY, "Live quality of served predictions per slice.",
                    ["model", "slice_key", "slice_value", "metric"], registry=registry)  # fmt: skip
    comparisons = (
        ("skew", result.skew, result.skew_thresholds),
        ("drift", result.drift, result.drift_thresholds),
    )
    for comparison, values, limits in comparisons:
        for feature, value in values.items():
            drift.labels(model, feature, comparison).set(value)
            limit.labels(model, feature, comparison).set(limits.get(feature, np.inf))
    for row in result.slice_quality:
        for metric in ("auc", "accuracy"):
            measured = row.get(metric)
            if measured is not None and not np.isnan(measured):
                quality.labels(model, row["slice_key"], row["slice_value"], metric).set(measured)
    return registry


def _push_retryable(err: BaseException) -> bool:
    """A 4xx is the request's fault and stays so; anything else may pass on the next try."""
    import urllib.error

    if isinstance(err, urllib.error.HTTPError):
        return err.code >= 500 or err.code == 429
    return isinstance(err, OSError)


def push_metrics(
    result: MonitorResult,
    model: str,
    gateway: str,
    job: str = "flight-delay-monitor",
    timeout_s: float = 10.0,
    attempts: int = 3,
    backoff_s: float = 1.0,
) -> None:
    """Push the monitoring gauges to a Prometheus Pushgateway (replacing the job's last push).

    Args:
        result: The monitoring window's result.
        model: Model name label.
        gateway: Pushgateway address (``host:port`` or URL).
        job: Pushgateway job name.
        timeout_s: Timeout of one attempt.
        attempts: Most attempts in all.
        backoff_s: Sleep before the second attempt (doubling after).

    Raises:
        mlops.retrying.RetryError: Every attempt failed (timeout, connection error, 5xx).
        urllib.error.HTTPError: The gateway refused the push with a 4xx.
    """
    from prometheus_client import push_to_gateway

    from mlops.retrying import retry_call

    registry = export_metrics(result, model)
    retry_call(
        lambda: push_to_gateway(gateway, job=job, registry=registry, timeout=timeout_s),
        f"push to pushgateway {gateway}",
        attempts=attempts,
        backoff_s=backoff_s,
        retryable=_push_retryable,
    )
