"""Evaluate core: score a candidate (and the production baseline), measure it overall and per
slice, and decide the blessing.

Pure functions over DataFrames, arrays and paths; ``component.py`` only resolves artifact paths,
calls :func:`run_evaluation` and logs the KFP metrics. TensorFlow is imported inside
:func:`score` only.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.evaluate.config import EvalConfig
from components.evaluate.metrics import (
    BinaryMetrics,
    binary_metrics,
    calibration_table,
    confusion,
    roc_curve,
)
from mlops import features as F
from mlops.artifacts import OPERATING_THRESHOLD, SCORE, SIGNATURE
from mlops.registry import PRODUCTION

PARAMETER_SOURCE = "decision_threshold parameter"


@dataclass(frozen=True)
class OperatingThreshold:
    """The decision threshold a model is judged at (precision, recall, F1, confusion matrix),
    and where it came from.

    Attributes:
        value: The threshold; ``score >= value`` is a "delayed" decision.
        source: ``model metadata`` (chosen by train on the validation split), ``registry
            evaluation of version N`` (a baseline's own), or the ``decision_threshold
            parameter`` when the model records none.
    """

    value: float
    source: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"value": self.value, "source": self.source}


def operating_threshold(
    recorded: Mapping[str, Any] | None, fallback: float, source: str
) -> OperatingThreshold:
    """The ``operating_threshold`` a model records in ``recorded``, else ``fallback``.

    Args:
        recorded: The model artifact's metadata, or a stored evaluation JSON, or ``None``.
        fallback: The ``decision_threshold`` parameter.
        source: Where ``recorded`` comes from, for the report.

    Raises:
        ValueError: The recorded value is not a number in (0, 1).
    """
    raw = (recorded or {}).get(OPERATING_THRESHOLD)
    if isinstance(raw, Mapping):  # an evaluation JSON records {"value": ..., "source": ...}
        raw = raw.get("value")
    if raw is None:
        return OperatingThreshold(float(fallback), PARAMETER_SOURCE)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: {OPERATING_THRESHOLD} is not a number: {raw!r}") from None
    if not 0.0 < value < 1.0:
        raise ValueError(f"{source}: {OPERATING_THRESHOLD} must be in (0, 1), got {value}")
    return OperatingThreshold(value, source)


@dataclass(frozen=True)
class SliceResult:
    """Metrics of one slice, candidate and baseline.

    Attributes:
        key: Slice key (``carrier``, ``origin``, ``sched_hour_band``).
        value: Slice value, e.g. ``UA``.
        count: Examples in the slice.
        gating: Whether the slice can block the blessing (enough examples, AUC defined).
        candidate: The candidate's metrics.
        baseline: The baseline's metrics, if there is a baseline.
        auc_delta: Candidate AUC minus baseline AUC.
        log_loss_delta: Candidate log loss minus baseline log loss.
        max_auc_drop: The AUC drop allowed in this slice.
        regressions: What regressed beyond its bound (empty when nothing did or not gating).
    """

    key: str
    value: str
    count: int
    gating: bool
    candidate: BinaryMetrics
    baseline: BinaryMetrics | None
    auc_delta: float | None
    log_loss_delta: float | None
    max_auc_drop: float
    regressions: tuple[str, ...] = ()

    @property
    def regressed(self) -> bool:
        """Gating and some metric regressed beyond its bound."""
        return bool(self.regressions)

    @property
    def name(self) -> str:
        """``key=value``."""
        return f"{self.key}={self.value}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "slice": self.name,
            "key": self.key,
            "value": self.value,
            "count": self.count,
            "gating": self.gating,
            # Flat copies of the headline numbers, for tables that show scalar columns only.
            "auc": self.candidate.auc,
            "baseline_auc": self.baseline.auc if self.baseline else None,
            "log_loss": self.candidate.log_loss,
            "pr_auc": self.candidate.pr_auc,
            "calibration_error": self.candidate.calibration_error,
            "precision": self.candidate.precision,
            "recall": self.candidate.recall,
            "f1": self.candidate.f1,
            "positive_rate": self.candidate.positive_rate,
            "candidate": self.candidate.to_dict(),
            "baseline": self.baseline.to_dict() if self.baseline else None,
            "auc_delta": self.auc_delta,
            "log_loss_delta": self.log_loss_delta,
            "max_auc_drop": self.max_auc_drop,
            "regressed": self.regressed,
            "regressions": list(self.regressions),
        }


@dataclass
class Evaluation:
    """The evaluation of a candidate and its blessing.

    Attributes:
        blessed: Whether the candidate may be pushed.
        reasons: One line per check, ``ok``/``FAIL``/``note``, naming the metric, slice and numbers.
        overall: The candidate's overall metrics.
        baseline_overall: The baseline's overall metrics, or ``None`` for a first model.
        baseline_version: Registry version of the baseline, if any.
        slices: Per-slice results.
        regressed_slices: ``key=value`` of every gating slice that regressed.
        config: The thresholds used.
        roc: The candidate's ROC curve (``fpr``, ``tpr``, ``threshold``).
        baseline_roc: The baseline's ROC curve.
        confusion_matrix: ``[[tn, fp], [fn, tp]]`` at the candidate's operating threshold,
            rows = actual.
        calibration: The candidate's calibration table (10 bins).
        baseline_calibration: The baseline's calibration table.
        threshold: The candidate's operating threshold and its source.
        baseline_threshold: The baseline's own operating threshold, if there is a baseline.
    """

    blessed: bool
    reasons: list[str]
    overall: BinaryMetrics
    baseline_overall: BinaryMetrics | None
    baseline_version: int | None
    slices: list[SliceResult]
    regressed_slices: list[str]
    config: EvalConfig
    roc: dict[str, list[float]]
    baseline_roc: dict[str, list[float]] | None
    confusion_matrix: list[list[int]]
    calibration: list[dict[str, float]]
    baseline_calibration: list[dict[str, float]] | None
    threshold: OperatingThreshold
    baseline_threshold: OperatingThreshold | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (nan becomes ``None``): the blessing artifact and ``evaluation.json``."""
        raw = {
            "blessed": self.blessed,
            "reasons": self.reasons,
            "baseline_version": self.baseline_version,
            "overall": self.overall.to_dict(),
            "baseline_overall": self.baseline_overall.to_dict() if self.baseline_overall else None,
            "slices": [s.to_dict() for s in self.slices],
            "regressed_slices": self.regressed_slices,
            "config": self.config.to_dict(),
            "roc": self.roc,
            "baseline_roc": self.baseline_roc,
            "confusion_matrix": self.confusion_matrix,
            "calibration": self.calibration,
            "baseline_calibration": self.baseline_calibration,
            # The next evaluation reads this back when this version is its baseline.
            OPERATING_THRESHOLD: self.threshold.to_dict(),
            "baseline_operating_threshold": (
                self.baseline_threshold.to_dict() if self.baseline_threshold else None
            ),
        }
        result: dict[str, Any] = _finite(raw)
        return result

    def to_metadata(self) -> dict[str, Any]:
        """The blessing artifact's metadata; :meth:`BlessingMetadata.from_metadata` reads it."""
        return BlessingMetadata(
            blessed=self.blessed,
            baseline_version=self.baseline_version,
            regressed_slices=list(self.regressed_slices),
            reasons=list(self.reasons),
        ).to_metadata()

    def kfp_metrics(self) -> dict[str, float]:
        """The scalar metrics the component logs: overall metrics, baseline AUC, the verdict."""
        out = {k: float(v) for k, v in self.overall.to_dict().items() if v is not None}
        out[OPERATING_THRESHOLD] = self.threshold.value
        if self.baseline_overall is not None:
            for key in ("auc", "pr_auc", "f1"):
                value = getattr(self.baseline_overall, key)
                if math.isfinite(value):
                    out[f"baseline_{key}"] = float(value)
        out["regressed_slices"] = float(len(self.regressed_slices))
        out["blessed"] = float(self.blessed)
        return out


@dataclass(frozen=True)
class BlessingMetadata:
    """What the blessing artifact's metadata says: the contract between evaluate and readers
    of a run (``mlops.runner``).

    Attributes:
        blessed: Whether the candidate may be pushed.
        baseline_version: Registry version of the baseline, ``None`` for a first model.
        regressed_slices: ``key=value`` of every gating slice that regressed.
        reasons: One line per check.
    """

    blessed: bool
    baseline_version: int | None
    regressed_slices: list[str]
    reasons: list[str]

    def to_metadata(self) -> dict[str, Any]:
        """KFP metadata: scalars and strings only (``0`` for no baseline, lists joined)."""
        return {
            "blessed": self.blessed,
            "baseline_version": self.baseline_version or 0,
            "regressed_slices": ",".join(self.regressed_slices),
            "reasons": "\n".join(self.reasons),
        }

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> BlessingMetadata | None:
        """Read :meth:`to_metadata`'s output back; ``None`` when it holds no blessing."""
        if "blessed" not in meta:
            return None
        regressed = str(meta.get("regressed_slices") or "")
        reasons = str(meta.get("reasons") or "")
        return cls(
            blessed=bool(meta["blessed"]),
            baseline_version=int(meta.get("baseline_version") or 0) or None,
            regressed_slices=regressed.split(",") if regressed else [],
            reasons=reasons.split("\n") if reasons else [],
        )


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def labels(df: pd.DataFrame) -> np.ndarray:
    """The 0/1 label column as float64.

    Raises:
        ValueError: The label column is missing or holds missing values.
    """
    if F.LABEL not in df.columns:
        raise ValueError(f"eval data has no label column {F.LABEL!r}")
    y = pd.to_numeric(df[F.LABEL], errors="coerce")
    if y.isna().any():
        raise ValueError(f"{int(y.isna().sum())} eval rows have no label")
    return y.to_numpy(dtype=np.float64)


def model_inputs(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """The serving contract's dense raw inputs: float32 with NaN, or bytes with b"" missing."""
    missing = [n for n in F.FEATURE_NAMES if n not in df.columns]
    if missing:
        raise ValueError(f"eval data lacks feature columns: {', '.join(missing)}")
    inputs: dict[str, np.ndarray] = {}
    for name in F.NUMERIC_FEATURES:
        inputs[name] = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=np.float32)
    for name in F.CATEGORICAL_FEATURES:
        col = df[name]
        inputs[name] = np.array(
            [b"" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).encode()
             for v in col.tolist()],
            dtype=object,
        )  # fmt: skip
    return inputs


def score(model_dir: str | Path, eval_df: pd.DataFrame, batch_size: int = 8192) -> np.ndarray:
    """Scores of a SavedModel that follows the serving contract, one per row of ``eval_df``.

    Raises:
        ValueError: The model lacks the ``serving_default`` signature or its ``score`` output.
    """
    import tensorflow as tf  # heavy import kept out of module import

    model = tf.saved_model.load(str(model_dir))
    if SIGNATURE not in model.signatures:
        raise ValueError(f"{model_dir} has no {SIGNATURE!r} signature")
    fn = model.signatures[SIGNATURE]
    inputs = model_inputs(eval_df)
    n = len(eval_df)
    out = np.empty(n, dtype=np.float64)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        batch = {
            name: tf.constant(
                values[start:stop], dtype=tf.float32 if name in F.NUMERIC_FEATURES else tf.string
            )
            for name, values in inputs.items()
        }
        result = fn(**batch)
        if SCORE not in result:
            raise ValueError(f"{model_dir} returns {sorted(result)}, not {SCORE!r}")
        out[start:stop] = result[SCORE].numpy().reshape(-1)
    return out


def _fmt(v: float | None) -> str:
    return "undefined" if v is None or not math.isfinite(v) else f"{v:.4f}"


def _delta(a: float, b: float) -> float | None:
    d = a - b
    return d if math.isfinite(d) else None


def _slice_results(
    eval_df: pd.DataFrame,
    y: np.ndarray,
    cand: np.ndarray,
    base: np.ndarray | None,
    config: EvalConfig,
    cand_threshold: float,
    base_threshold: float,
) -> list[SliceResult]:
    columns = F.slice_frame(eval_df)
    results = []
    for key in F.SLICE_KEYS:
        values = columns[key].to_numpy()
        for value in sorted(set(values.tolist())):
            mask = values == value
            c = binary_metrics(y[mask], cand[mask], cand_threshold)
            b = binary_metrics(y[mask], base[mask], base_threshold) if base is not None else None
            auc_delta = _delta(c.auc, b.auc) if b is not None else None
            ll_delta = _delta(c.log_loss, b.log_loss) if b is not None else None
            gating = c.count >= config.min_slice_count and math.isfinite(c.auc)
            allowed = config.slice_drop(key, value)
            regressions = []
            if gating and b is not None:
                if auc_delta is not None and auc_delta < -allowed:
                    regressions.append(
                        f"AUC {_fmt(c.auc)} vs baseline {_fmt(b.auc)}, drop {-auc_delta:.4f} > "
                        f"allowed {allowed:.4f}"
                    )
                if ll_delta is not None and ll_delta > config.max_slice_log_loss_increase:
                    regressions.append(
                        f"log loss {_fmt(c.log_loss)} vs baseline {_fmt(b.log_loss)}, increase "
                        f"{ll_delta:.4f} > allowed {config.max_slice_log_loss_increase:.4f}"
                    )
            results.append(
                SliceResult(
                    key, value, c.count, gating, c, b, auc_delta, ll_delta, allowed,
                    tuple(regressions),
                )
            )  # fmt: skip
    return results


def evaluate(
    eval_df: pd.DataFrame,
    candidate_scores: np.ndarray,
    baseline_scores: np.ndarray | None = None,
    config: EvalConfig | None = None,
    baseline_version: int | None = None,
    threshold: OperatingThreshold | None = None,
    baseline_threshold: OperatingThreshold | None = None,
) -> Evaluation:
    """Measure the candidate overall and per slice and decide the blessing.

    Without a baseline (a first model) the candidate must meet the absolute thresholds. With
    one, scored on the same rows, the overall AUC may not drop by more than ``max_auc_drop`` and
    no gating slice (at least ``min_slice_count`` examples) by more than its allowed drop.
    The gate reads threshold-free metrics only (AUC, log loss, calibration); precision, recall,
    F1 and accuracy are reported at each model's own operating threshold.

    Args:
        eval_df: Eval rows with the label and the slice columns.
        candidate_scores: The candidate's scores, aligned with ``eval_df``.
        baseline_scores: The production model's scores on the same rows, or ``None``.
        config: Thresholds; defaults to ``EvalConfig()``.
        baseline_version: Registry version of the baseline, recorded in the result.
        threshold: The candidate's operating threshold; default ``config.threshold``.
        baseline_threshold: The baseline's; default ``config.threshold``.
    """
    config = config or EvalConfig()
    threshold = threshold or OperatingThreshold(config.threshold, PARAMETER_SOURCE)
    if baseline_scores is None:
        baseline_threshold = None
    elif baseline_threshold is None:
        baseline_threshold = OperatingThreshold(config.threshold, PARAMETER_SOURCE)
    y = labels(eval_df)
    cand = np.asarray(candidate_scores, dtype=np.float64).ravel()
    base = None if baseline_scores is None else np.asarray(baseline_scores, np.float64).ravel()
    for name, scores in (("candidate", cand), ("baseline", base)):
        if scores is not None and scores.size != y.size:
            raise ValueError(f"{name} has {scores.size} scores for {y.size} eval rows")

    base_t = baseline_threshold.value if baseline_threshold else threshold.value
    overall = binary_metrics(y, cand, threshold.value)
    base_overall = None if base is None else binary_metrics(y, base, base_t)
    slices = _slice_results(eval_df, y, cand, base, config, threshold.value, base_t)
    failures: list[str] = []
    passes: list[str] = []

    if not math.isfinite(overall.auc):
        failures.append(
            f"FAIL overall AUC undefined: the {overall.count} eval rows hold one class only"
        )
    elif base_overall is None or not math.isfinite(base_overall.auc):
        if base is not None:
            passes.append("note baseline AUC undefined; compared with absolute thresholds")
        _check_absolute(overall, config, passes, failures)
    else:
        _check_against_baseline(overall, base_overall, slices, config, passes, failures)
    passes += _slice_notes(slices, config)
    passes.append(_threshold_note(threshold, baseline_threshold))

    tn, fp, fn, tp = confusion(y, cand, threshold.value)
    fpr, tpr, thr = roc_curve(y, cand)
    baseline_roc = None
    if base is not None:
        bfpr, btpr, bthr = roc_curve(y, base)
        baseline_roc = {"fpr": bfpr, "tpr": btpr, "threshold": bthr}
    return Evaluation(
        blessed=not failures,
        reasons=failures + passes,
        overall=overall,
        baseline_overall=base_overall,
        baseline_version=baseline_version,
        slices=slices,
        regressed_slices=[s.name for s in slices if s.regressed],
        config=config,
        roc={"fpr": fpr, "tpr": tpr, "threshold": thr},
        baseline_roc=baseline_roc,
        confusion_matrix=[[tn, fp], [fn, tp]],
        calibration=calibration_table(y, cand),
        baseline_calibration=calibration_table(y, base) if base is not None else None,
        threshold=threshold,
        baseline_threshold=baseline_threshold,
    )


def _check_absolute(
    overall: BinaryMetrics, config: EvalConfig, passes: list[str], failures: list[str]
) -> None:
    """A first model (or one whose baseline has no AUC): the absolute thresholds."""
    checks: list[tuple[str, float, float, bool]] = [
        ("AUC", overall.auc, config.min_auc, True),
        ("log loss", overall.log_loss, config.max_log_loss, False),
    ]
    if config.max_calibration_error is not None:
        checks.append(
            ("calibration error", overall.calibration_error, config.max_calibration_error,
             False)
        )  # fmt: skip
    for metric, value, bound, higher_is_better in checks:
        ok = value >= bound if higher_is_better else value <= bound
        op = (">=" if ok else "<") if higher_is_better else ("<=" if ok else ">")
        kind = "min" if higher_is_better else "max"
        line = f"overall {metric} {_fmt(value)} {op} {kind} {_fmt(bound)} (first model)"
        (passes if ok else failures).append(("ok " if ok else "FAIL ") + line)


def _check_against_baseline(
    overall: BinaryMetrics,
    base_overall: BinaryMetrics,
    slices: list[SliceResult],
    config: EvalConfig,
    passes: list[str],
    failures: list[str],
) -> None:
    """With a baseline: overall AUC drop, overall log loss increase, then every gating slice."""
    delta = overall.auc - base_overall.auc
    ok = delta >= -config.max_auc_drop
    line = (
        f"overall AUC {_fmt(overall.auc)} vs baseline {_fmt(base_overall.auc)} "
        f"(change {delta:+.4f}, allowed drop {config.max_auc_drop:.4f})"
    )
    (passes if ok else failures).append(("ok " if ok else "FAIL ") + line)
    ll_delta = overall.log_loss - base_overall.log_loss
    ok = ll_delta <= config.max_log_loss_increase
    line = (
        f"overall log loss {_fmt(overall.log_loss)} vs baseline {_fmt(base_overall.log_loss)}"
        f" (change {ll_delta:+.4f}, allowed increase {config.max_log_loss_increase:.4f})"
    )
    (passes if ok else failures).append(("ok " if ok else "FAIL ") + line)
    for s in slices:
        if s.regressed:
            failures.append(f"FAIL slice {s.name} (n={s.count}): " + "; ".join(s.regressions))
    gating = [s for s in slices if s.gating and s.baseline is not None]
    held = [s for s in gating if not s.regressed]
    if held:
        passes.append(
            f"ok {len(held)} of {len(gating)} slices with >= {config.min_slice_count} "
            f"examples within their allowed AUC drop and log loss increase"
        )


def _slice_notes(slices: list[SliceResult], config: EvalConfig) -> list[str]:
    """Notes on the slices that do not gate: too small, or one class only."""
    notes = []
    small = [s for s in slices if s.count < config.min_slice_count]
    if small:
        names = ", ".join(f"{s.name} (n={s.count})" for s in small)
        notes.append(
            f"note {len(small)} slices with < {config.min_slice_count} examples reported, "
            f"not gating: {names}"
        )
    one_class = [s for s in slices if s.count >= config.min_slice_count and not s.gating]
    if one_class:
        names = ", ".join(s.name for s in one_class)
        notes.append(f"note slices with one class only (AUC undefined), not gating: {names}")
    return notes


def _threshold_note(t: OperatingThreshold, b: OperatingThreshold | None) -> str:
    """Which operating thresholds precision, recall and F1 were measured at, and why."""
    line = f"note precision/recall/F1 at operating threshold {t.value:.4f} ({t.source})"
    if b is not None:
        line += f"; baseline at its own {b.value:.4f} ({b.source})"
    return line


@dataclass(frozen=True)
class BaselineModel:
    """The production model to compare with.

    Attributes:
        version: Its registry version.
        model_dir: A local directory holding its SavedModel.
        evaluation: Its stored evaluation (``evaluation.json``), which records the operating
            threshold it was judged at.
    """

    version: int
    model_dir: Path
    evaluation: Mapping[str, Any]


def find_baseline(
    registry_uri: str, model_name: str, alias: str, download_dir: Path
) -> BaselineModel | None:
    """The version ``alias`` points at, as a local SavedModel; ``None`` when there is none."""
    from mlops.registry import ModelRegistry

    registry = ModelRegistry(registry_uri)
    version = registry.find(model_name, alias)
    if version is None:
        return None
    stored = registry.evaluation(model_name, version.version)
    if version.is_local:
        return BaselineModel(version.version, version.local_model_path, stored)
    return BaselineModel(
        version.version, registry.download(model_name, version.version, download_dir), stored
    )


def run_evaluation(
    eval_path: Path,
    model_dir: Path,
    registry_uri: str,
    model_name: str,
    config: EvalConfig,
    report_path: Path,
    blessing_path: Path,
    baseline_alias: str = PRODUCTION,
    model_metadata: Mapping[str, Any] | None = None,
) -> Evaluation:
    """Evaluate a candidate against the registry's production model; write report and blessing.

    If the baseline cannot score the eval data (e.g. the feature contract changed since it was
    trained), the candidate is judged by the absolute thresholds and a reason says so.

    Args:
        eval_path: The eval split (parquet).
        model_dir: The candidate's SavedModel.
        registry_uri: The model registry.
        model_name: The registered model whose ``baseline_alias`` is the baseline.
        config: Thresholds.
        report_path: Where to write the HTML report.
        blessing_path: Where to write the blessing JSON (``Evaluation.to_dict()``).
        baseline_alias: The alias of the baseline.
        model_metadata: The candidate model artifact's metadata; its ``operating_threshold``
            (chosen by train on the validation split) is the candidate's threshold, else
            ``config.threshold``. The baseline is judged at the threshold its stored
            evaluation records, with the same fallback.
    """
    from components.evaluate.report import render_report

    threshold = operating_threshold(model_metadata, config.threshold, "model metadata")
    eval_df = pd.read_parquet(eval_path)
    candidate = score(model_dir, eval_df)
    notes: list[str] = []
    baseline_scores = None
    baseline_version = None
    baseline_threshold = None
    with tempfile.TemporaryDirectory() as tmp:
        baseline = find_baseline(registry_uri, model_name, baseline_alias, Path(tmp))
        if baseline is None:
            notes.append(f"note no {baseline_alias} model in {registry_uri}: first model")
        else:
            try:
                baseline_scores = score(baseline.model_dir, eval_df)
                baseline_version = baseline.version
            except Exception as err:  # any load/signature failure: fall back, and say why
                notes.append(
                    f"note baseline version {baseline.version} could not score the eval data "
                    f"({type(err).__name__}: {err}); compared with absolute thresholds"
                )
    if baseline is not None and baseline_scores is not None:
        # Outside the try above: a malformed stored threshold is an error, not a reason to
        # drop the baseline comparison.
        baseline_threshold = operating_threshold(
            baseline.evaluation,
            config.threshold,
            f"registry evaluation of version {baseline.version}",
        )
    result = evaluate(
        eval_df, candidate, baseline_scores, config, baseline_version, threshold,
        baseline_threshold,
    )  # fmt: skip
    result.reasons.extend(notes)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(render_report(result, model_name))
    blessing_path.parent.mkdir(parents=True, exist_ok=True)
    blessing_path.write_text(json.dumps(result.to_dict(), indent=2))
    return result


def read_blessing(path: Path) -> dict[str, Any]:
    """Read a blessing JSON written by :func:`run_evaluation`.

    Raises:
        ValueError: The file is not a blessing (no boolean ``blessed``).
    """
    raw = json.loads(Path(path).read_text())
    if not isinstance(raw, dict) or not isinstance(raw.get("blessed"), bool):
        raise ValueError(f"{path} is not a blessing: it has no boolean 'blessed'")
    return raw
