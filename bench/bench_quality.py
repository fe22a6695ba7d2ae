"""Model quality on January-March 2013 against logistic regression and gradient-boosted trees.

Issue #15's targets: eval AUC >= 0.84 and within 0.01 of a gradient-boosted-trees baseline on
the same features. All three models see the same rows and the same split:

- the training set is built as ingest builds it (Feast point-in-time join of the feature
  service, ``components.ingest.core``), columns ``mlops.features.FEATURE_NAMES``;
- split by time into train | validation | eval, each cut at a UTC day boundary, validation
  just before eval (``VALIDATION_FRACTION``, ``EVAL_FRACTION``: the pipeline's defaults);
- the baselines are fitted on train; tuning (LR's regularisation, HGB's tree size) and early
  stopping (HGB's number of trees) use validation only, and each model's operating threshold is
  the one that maximises F1 on validation (``f1_optimal_threshold``, as train chooses ours);
- eval is touched once, for the figures: AUC, log loss, PR-AUC, ECE, precision / recall / F1
  at the operating threshold, overall and per slice (``mlops.features.slice_frame``), with the
  metric functions of the evaluate component.

Our model's figures are the evaluate step's of one local pipeline run on the same window
(``mlops.runner.run_local``). Both read a fresh copy of ``feature_repo/`` prepared from the
current code (``mlops prepare`` + ``feast apply``, ~30 s), so the figures never come from stale
prepared sources. scikit-learn comes from the dev requirements: this benchmark is its only user.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.evaluate.config import GATE_DEFAULTS
from components.evaluate.metrics import BinaryMetrics, binary_metrics, f1_optimal_threshold
from mlops import features as F

REPO = Path("feature_repo").resolve()
FIRST_SPAN, LAST_SPAN = "2013-01", "2013-03"
VALIDATION_FRACTION, EVAL_FRACTION = 0.1, 0.2
TARGET_AUC, TARGET_GAP_TO_GBT = 0.84, 0.01
SEED = 0
# Tuning grids, chosen on validation log loss. HGB adds trees until the validation loss has not
# improved for HGB_PATIENCE trees, then keeps the best prefix on validation (early stopping on
# our validation split, not on a random share of train, and without touching eval).
LR_C_GRID = (0.01, 0.1, 1.0)
HGB_GRID = tuple({"max_leaf_nodes": n, "min_samples_leaf": 50} for n in (15, 31, 63))
HGB_MAX_ITER, HGB_LEARNING_RATE, HGB_PATIENCE = 1000, 0.1, 30
# Headline metrics per model and slice.
METRICS = ("auc", "log_loss", "pr_auc", "calibration_error", "precision", "recall", "f1")
SLICE_METRICS = ("auc", "pr_auc", "precision", "recall")


def prepared_copy(dest: Path, source: Path = REPO) -> Path:
    """A copy of the Feast repository's definitions with freshly prepared, applied sources."""
    from mlops.data import prepare
    from mlops.feast_ops import apply

    dest.mkdir(parents=True)
    for name in ("feature_store.yaml", "definitions.py"):
        shutil.copy(source / name, dest / name)
    prepare(dest / "data")
    apply(dest)
    return dest


def load_training_set(repo: Path) -> pd.DataFrame:
    """The joined training set of the window, as ingest builds it (before its split)."""
    from components.ingest.core import SpanWindow, join_features, load_entities

    entities = load_entities(repo / "data", SpanWindow(FIRST_SPAN, LAST_SPAN))
    return join_features(repo, entities)


def three_way_split(
    df: pd.DataFrame,
    validation_fraction: float = VALIDATION_FRACTION,
    eval_fraction: float = EVAL_FRACTION,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, str, str]:
    """train | validation | eval by time, as ingest splits: its ``time_split`` cuts eval off
    (the ``1 - eval_fraction`` quantile of the event timestamps, floored to a UTC day), then
    the same rule cuts validation off what precedes it, at ``validation_fraction`` of the whole
    window. Returns the three frames and the two cuts (ISO 8601).

    Raises:
        DataError: A part would be empty.
    """
    from components.ingest.core import time_split

    fit, ev, eval_cut = time_split(df, eval_fraction)
    train, val, val_cut = time_split(fit, validation_fraction / (1.0 - eval_fraction))
    return train, val, ev, val_cut, eval_cut


def _labels(df: pd.DataFrame) -> np.ndarray:
    return df[F.LABEL].to_numpy(dtype=np.float64)


def _hgb_frame(df: pd.DataFrame, categories: dict[str, list[str]]) -> pd.DataFrame:
    """Numerics as float, categoricals as pandas categories of the training vocabulary (values
    unseen in train become missing, as in serving)."""
    out = df[list(F.FEATURE_NAMES)].copy()
    for name in F.NUMERIC_FEATURES:
        out[name] = pd.to_numeric(out[name], errors="coerce").astype("float64")
    for name in F.CATEGORICAL_FEATURES:
        out[name] = pd.Categorical(out[name].astype(object), categories=categories[name])
    return out


def fit_hgb(
    train: pd.DataFrame, val: pd.DataFrame, ev: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """HistGradientBoostingClassifier with native categories; the grid point and the number of
    trees are chosen on validation log loss. Returns (validation scores, eval scores, choice)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from components.evaluate.metrics import log_loss

    categories = {
        n: sorted(train[n].dropna().astype(str).unique().tolist()) for n in F.CATEGORICAL_FEATURES
    }
    x_train, x_val, x_ev = (_hgb_frame(d, categories) for d in (train, val, ev))
    y_train, y_val = _labels(train), _labels(val)
    best: tuple[float, np.ndarray, Any, dict[str, Any]] | None = None
    for params in HGB_GRID:
        model = HistGradientBoostingClassifier(
            learning_rate=HGB_LEARNING_RATE, max_iter=HGB_MAX_ITER, early_stopping=True,
            scoring="loss", n_iter_no_change=HGB_PATIENCE, categorical_features="from_dtype",
            random_state=SEED, **params,
        )  # fmt: skip
        model.fit(x_train, y_train, X_val=x_val, y_val=y_val)
        # The model after k trees scores validation as a model trained with max_iter=k would.
        staged = [p[:, 1] for p in model.staged_predict_proba(x_val)]
        losses = [log_loss(y_val, p) for p in staged]
        k = int(np.argmin(losses))
        if best is None or losses[k] < best[0]:
            best = (losses[k], staged[k], model, {**params, "n_trees": k + 1})
    assert best is not None
    _, p_val, model, choice = best
    for i, p in enumerate(model.staged_predict_proba(x_ev)):
        if i + 1 == choice["n_trees"]:
            return p_val, p[:, 1], choice
    raise AssertionError("unreachable: n_trees <= HGB_MAX_ITER")


def fit_logistic(
    train: pd.DataFrame, val: pd.DataFrame, ev: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Logistic regression over one-hot categoricals and standardised numerics (median-imputed,
    with missing indicators); C is chosen on validation log loss."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from components.evaluate.metrics import log_loss

    def frame(df: pd.DataFrame) -> pd.DataFrame:
        out = df[list(F.FEATURE_NAMES)].copy()
        for name in F.NUMERIC_FEATURES:
            out[name] = pd.to_numeric(out[name], errors="coerce").astype("float64")
        for name in F.CATEGORICAL_FEATURES:
            out[name] = out[name].astype(object).where(out[name].notna(), F.MISSING_CATEGORY)
            out[name] = out[name].astype(str)
        return out

    x_train, x_val, x_ev = frame(train), frame(val), frame(ev)
    y_train, y_val = _labels(train), _labels(val)
    columns = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median", add_indicator=True,
                                            keep_empty_features=True), StandardScaler()),
         list(F.NUMERIC_FEATURES)),
        ("cat", OneHotEncoder(handle_unknown="ignore"), list(F.CATEGORICAL_FEATURES)),
    ])  # fmt: skip
    best: tuple[float, Any, float] | None = None
    for c in LR_C_GRID:
        model = make_pipeline(columns, LogisticRegression(C=c, max_iter=2000))
        model.fit(x_train, y_train)
        loss = log_loss(y_val, model.predict_proba(x_val)[:, 1])
        if best is None or loss < best[0]:
            best = (loss, model, c)
    assert best is not None
    _, model, c = best
    return model.predict_proba(x_val)[:, 1], model.predict_proba(x_ev)[:, 1], {"C": c}


def _figures(m: BinaryMetrics) -> dict[str, float | None]:
    return {k: m.to_dict()[k] for k in METRICS}


def measure(
    name: str, y_val: np.ndarray, p_val: np.ndarray, ev: pd.DataFrame, p_ev: np.ndarray
) -> dict[str, Any]:
    """One model's figures: threshold chosen on validation, metrics on eval, overall and per
    slice (slices with at least the gate's ``min_slice_count`` rows and both classes)."""
    threshold, val_f1 = f1_optimal_threshold(y_val, p_val)
    y_ev = _labels(ev)
    out: dict[str, Any] = {
        f"{name}_validation_auc": binary_metrics(y_val, p_val).auc,
        f"{name}_operating_threshold": threshold,
        f"{name}_validation_f1": val_f1,
    }
    for key, value in _figures(binary_metrics(y_ev, p_ev, threshold)).items():
        out[f"{name}_eval_{key}"] = value
    out["_slices"] = slice_metrics(ev, y_ev, p_ev, threshold)
    return out


def slice_metrics(
    ev: pd.DataFrame, y: np.ndarray, p: np.ndarray, threshold: float
) -> dict[str, dict[str, Any]]:
    """Per slice ``key=value``: its size and ``SLICE_METRICS`` at ``threshold``."""
    columns = F.slice_frame(ev)
    out: dict[str, dict[str, Any]] = {}
    for key in F.SLICE_KEYS:
        values = columns[key].to_numpy()
        for value in sorted(set(values.tolist())):
            mask = values == value
            if mask.sum() < GATE_DEFAULTS.min_slice_count or len(set(y[mask].tolist())) < 2:
                continue
            m = binary_metrics(y[mask], p[mask], threshold).to_dict()
            out[f"{key}={value}"] = {"n": int(mask.sum()), **{k: m[k] for k in SLICE_METRICS}}
    return out


def baseline_figures(df: pd.DataFrame) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Split, fit both baselines, measure them; (flat figures, per-slice figures per model)."""
    train, val, ev, val_cut, eval_cut = three_way_split(df)
    figures: dict[str, Any] = {
        "window": f"{FIRST_SPAN}..{LAST_SPAN}",
        "features": len(F.FEATURE_NAMES),
        "rows_train": len(train), "rows_validation": len(val), "rows_eval": len(ev),
        "validation_cut": val_cut, "eval_cut": eval_cut,
        "eval_positive_rate": round(float(_labels(ev).mean()), 4),
    }  # fmt: skip
    slices: dict[str, dict[str, Any]] = {}
    y_val = _labels(val)
    for name, fit in (("logistic", fit_logistic), ("hgb", fit_hgb)):
        t0 = time.perf_counter()
        p_val, p_ev, choice = fit(train, val, ev)
        figures[f"{name}_fit_s"] = round(time.perf_counter() - t0, 1)
        figures[f"{name}_choice"] = json.dumps(choice, sort_keys=True)
        measured = measure(name, y_val, p_val, ev, p_ev)
        slices[name] = measured.pop("_slices")
        figures.update(measured)
    return figures, slices


def pipeline_figures(repo: Path, work: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """One local pipeline run on the window; the evaluate step's figures of our model.

    Raises:
        RuntimeError: The run failed.
    """
    from mlops.registry import code_revision_label
    from mlops.runner import run_local

    t0 = time.perf_counter()
    summary = run_local(work / "runs", {
        "feature_repo": str(repo), "first_span": FIRST_SPAN, "last_span": LAST_SPAN,
        "registry_uri": str(work / "registry"), "code_revision": code_revision_label(),
    }, "bench-quality")  # fmt: skip
    if summary.status != "SUCCESS":
        raise RuntimeError(f"pipeline run failed: {summary.status}")
    steps = {s.name: s.outputs for s in summary.steps}
    evaluate = steps["evaluate-op"]
    metrics = evaluate["metrics"]["metadata"]
    blessing = json.loads(Path(evaluate["blessing"]["path"]).read_text())
    figures: dict[str, Any] = {"pipeline_wall_s": round(time.perf_counter() - t0, 1)}
    for key in METRICS:
        figures[f"model_eval_{key}"] = metrics.get(key)
    threshold = blessing.get("operating_threshold") or {}
    figures["model_operating_threshold"] = threshold.get("value")
    figures["model_operating_threshold_source"] = threshold.get("source")
    trained = json.loads(steps["train-op"]["Output"]["value"])
    for key in ("validation_auc", "logistic_validation_auc", "operating_threshold", "epochs_run"):
        if key in trained:
            figures[f"model_train_{key}"] = trained[key]
    # The same eval rows as the baselines'? ingest's split metadata says where it cut.
    for name, out in steps["ingest-op"].items():
        meta = out.get("metadata") or {}
        if "rows" in meta:
            figures[f"pipeline_{name}_rows"] = meta["rows"]
            figures[f"pipeline_{name}_split_time"] = meta.get("split_time")
    slices = {
        s["slice"]: {"n": s["count"], **{k: (s.get("candidate") or {}).get(k)
                                         for k in SLICE_METRICS}}
        for s in blessing.get("slices", [])
    }  # fmt: skip
    return figures, slices


def compare(figures: dict[str, Any], slices: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Add our model against HGB (overall and per slice) and the targets' verdicts."""
    ours, hgb = figures.get("model_eval_auc"), figures.get("hgb_eval_auc")
    if ours is None or hgb is None:
        return
    figures["model_vs_hgb_eval_auc_ratio"] = round(ours / hgb, 4)
    figures["model_minus_hgb_eval_auc"] = round(ours - hgb, 4)
    figures["model_minus_logistic_eval_auc"] = round(ours - figures["logistic_eval_auc"], 4)
    figures["target_eval_auc_ge_0.84"] = ours >= TARGET_AUC
    figures["target_within_0.01_of_hgb"] = ours >= hgb - TARGET_GAP_TO_GBT
    gaps = {
        name: s["auc"] - slices["hgb"][name]["auc"]
        for name, s in slices.get("model", {}).items()
        if name in slices["hgb"] and s.get("auc") is not None
    }
    if gaps:
        worst = min(gaps, key=gaps.__getitem__)
        figures["model_minus_hgb_worst_slice"] = f"{worst}: {gaps[worst]:+.4f}"


def _rounded(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}


def run(with_pipeline: bool = True) -> dict[str, Any]:
    """Baselines on the joined window, then (``with_pipeline``) our pipeline on the same one."""
    with tempfile.TemporaryDirectory() as tmp:
        repo = prepared_copy(Path(tmp) / "feature_repo")
        figures, slices = baseline_figures(load_training_set(repo))
        if with_pipeline:
            ours, slices["model"] = pipeline_figures(repo, Path(tmp) / "pipeline")
            figures.update(ours)
            # Our model must be judged on the baselines' eval rows (and tuned on their
            # validation rows), or the comparison is void.
            for split in ("eval", "validation"):
                rows = ours.get(f"pipeline_{split}_data_rows")
                if rows is not None and rows != figures[f"rows_{split}"]:
                    figures[f"{split}_rows_mismatch"] = (
                        f"pipeline {rows} vs bench {figures[f'rows_{split}']}"
                    )
    compare(figures, slices)
    per_slice: dict[str, dict[str, Any]] = {}
    for model, by_slice in slices.items():
        for name, values in by_slice.items():
            row = per_slice.setdefault(name, {"n": values["n"]})
            row.update({f"{k}_{model}": values[k] for k in SLICE_METRICS})
    out = _rounded(figures)
    out["per_slice"] = {name: _rounded(row) for name, row in sorted(per_slice.items())}
    return out
