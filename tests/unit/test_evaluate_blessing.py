"""Unit tests of slicing, the blessing rules and the report on seeded synthetic scores (no TF)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from components.evaluate.core import (
    PARAMETER_SOURCE,
    EvalConfig,
    OperatingThreshold,
    evaluate,
    model_inputs,
    operating_threshold,
)
from components.evaluate.metrics import binary_metrics
from components.evaluate.report import render_report
from mlops import features as F

pytestmark = pytest.mark.unit


def make_eval(n: int = 6000, seed: int = 0) -> pd.DataFrame:
    """Seeded eval rows: big carriers UA/AA/B6, a small one (OO), one never delayed (HA)."""
    rng = np.random.default_rng(seed)
    carrier = rng.choice(["UA", "AA", "B6"], n).astype(object)
    carrier[:40] = "OO"
    carrier[40:340] = "HA"
    label = rng.integers(0, 2, n)
    label[40:340] = 0
    return pd.DataFrame(
        {
            F.CARRIER: carrier,
            F.ORIGIN: rng.choice(["EWR", "JFK", "LGA"], n),
            "sched_dep_hour": rng.integers(5, 23, n).astype(float),
            F.LABEL: label,
        }
    )


def informative(df: pd.DataFrame, seed: int = 1, strength: float = 0.35) -> np.ndarray:
    """Scores that carry the label plus noise (AUC about 0.95), kept inside (0, 1)."""
    rng = np.random.default_rng(seed)
    return np.clip(
        0.3 + strength * (df[F.LABEL].to_numpy() - 0.5) + 0.5 * rng.random(len(df)) - 0.25,
        0.02,
        0.98,
    )


def scramble(df: pd.DataFrame, scores: np.ndarray, carrier: str, seed: int = 7) -> np.ndarray:
    """The same scores, with one carrier's scores replaced by noise (its AUC falls to ~0.5)."""
    out = scores.copy()
    mask = (df[F.CARRIER] == carrier).to_numpy()
    out[mask] = np.random.default_rng(seed).permutation(out[mask])
    return out


def test_slice_columns_derive_hour_band_and_mark_missing() -> None:
    df = pd.DataFrame(
        {
            F.CARRIER: ["UA", None, "AA", "DL"],
            F.ORIGIN: ["JFK", "EWR", np.nan, "LGA"],
            "sched_dep_hour": [5.0, 6.0, 17.0, np.nan],
        }
    )
    cols = F.slice_frame(df)  # what evaluate slices by
    assert list(cols.columns) == list(F.SLICE_KEYS)
    assert cols["sched_hour_band"].tolist() == ["night", "morning", "afternoon", "__missing__"]
    assert cols[F.CARRIER].tolist() == ["UA", "__missing__", "AA", "DL"]
    assert cols[F.ORIGIN].tolist() == ["JFK", "EWR", "__missing__", "LGA"]


def test_model_inputs_follow_the_serving_contract() -> None:
    row = {n: 1.5 for n in F.NUMERIC_FEATURES} | {n: "x" for n in F.CATEGORICAL_FEATURES}
    df = pd.DataFrame([row, row])
    df.loc[1, "temp"] = np.nan
    df.loc[1, F.CARRIER] = None
    df.loc[1, "plane_engine"] = np.nan
    inputs = model_inputs(df)
    assert set(inputs) == set(F.FEATURE_NAMES)
    assert inputs["temp"].dtype == np.float32 and np.isnan(inputs["temp"][1])
    assert inputs[F.CARRIER].tolist() == [b"x", b""]
    assert inputs["plane_engine"].tolist() == [b"x", b""]
    with pytest.raises(ValueError, match="lacks feature columns: temp"):
        model_inputs(df.drop(columns="temp"))


def test_first_model_is_judged_by_absolute_thresholds() -> None:
    df = make_eval()
    good = evaluate(df, informative(df))
    assert good.blessed and good.baseline_overall is None and good.regressed_slices == []
    assert good.reasons[0].startswith("ok overall AUC") and "(first model)" in good.reasons[0]

    noise = np.random.default_rng(5).random(len(df))
    bad = evaluate(df, noise, config=EvalConfig(min_auc=0.6))
    assert not bad.blessed
    assert re.match(r"FAIL overall AUC 0\.\d{4} < min 0\.6000 \(first model\)", bad.reasons[0])

    strict = evaluate(df, informative(df), config=EvalConfig(max_calibration_error=0.001))
    assert not strict.blessed
    assert any(r.startswith("FAIL overall calibration error") for r in strict.reasons)


def test_same_scores_as_baseline_are_blessed() -> None:
    df = make_eval()
    s = informative(df)
    result = evaluate(df, s, s.copy(), baseline_version=4)
    assert result.blessed and result.baseline_version == 4
    assert all(sl.auc_delta in (0.0, None) for sl in result.slices)
    assert any("slices with >= 200 examples within" in r for r in result.reasons)


def test_slice_regression_blocks_and_names_the_slice() -> None:
    df = make_eval()
    base = informative(df)
    cand = scramble(df, base, "UA")
    result = evaluate(df, cand, base, EvalConfig(max_auc_drop=0.5), baseline_version=1)

    assert not result.blessed
    assert "carrier=UA" in result.regressed_slices
    assert not any(s.startswith("carrier=AA") or s.startswith("carrier=B6")
                   for s in result.regressed_slices)  # fmt: skip
    ua = next(r for r in result.reasons if "carrier=UA" in r)
    assert re.match(
        r"FAIL slice carrier=UA \(n=\d+\): AUC 0\.\d{4} vs baseline 0\.\d{4}, drop 0\.\d{4} > "
        r"allowed 0\.0500",
        ua,
    )
    # The overall AUC drop was allowed (0.5), so the slice alone blocked the blessing.
    assert any(r.startswith("ok overall AUC") for r in result.reasons)


def test_slice_override_relaxes_one_slice() -> None:
    df = make_eval()
    base = informative(df)
    cand = scramble(df, base, "UA")
    relaxed = EvalConfig(
        max_auc_drop=0.5,
        max_log_loss_increase=1.0,
        max_slice_log_loss_increase=1.0,
        slice_max_auc_drop={"carrier=UA": 0.5, "origin": 0.5, "sched_hour_band": 0.5},
    )
    assert relaxed.slice_drop("carrier", "UA") == 0.5
    assert relaxed.slice_drop("carrier", "AA") == 0.05
    assert relaxed.slice_drop("origin", "JFK") == 0.5
    assert evaluate(df, cand, base, relaxed).blessed


def test_small_and_one_class_slices_are_reported_not_gating() -> None:
    df = make_eval()
    base = informative(df)
    # Wreck the small slice (n=40) and the one-class slice (HA, never delayed, n=300): neither
    # can gate, so the candidate stays blessed.
    cand = scramble(df, scramble(df, base, "OO"), "HA")
    result = evaluate(df, cand, base, EvalConfig(max_log_loss_increase=1.0))
    small = next(s for s in result.slices if s.name == "carrier=OO")
    one_class = next(s for s in result.slices if s.name == "carrier=HA")
    assert small.count == 40 and not small.gating
    assert one_class.count == 300 and not one_class.gating and np.isnan(one_class.candidate.auc)
    assert one_class.candidate.positive_rate == 0.0 and np.isnan(one_class.candidate.recall)
    assert result.blessed, result.reasons
    assert any("carrier=OO (n=40)" in r and "not gating" in r for r in result.reasons)
    assert any("one class only" in r and "carrier=HA" in r for r in result.reasons)


def test_miscalibrated_slice_regresses_on_log_loss() -> None:
    df = make_eval()
    base = informative(df)
    cand = base.copy()
    aa = (df[F.CARRIER] == "AA").to_numpy()
    # A constant logit shift keeps AA's ranking (same AUC) but its probabilities go wrong.
    logit = np.log(np.clip(cand[aa], 1e-3, 1 - 1e-3) / (1 - np.clip(cand[aa], 1e-3, 1 - 1e-3)))
    cand[aa] = 1 / (1 + np.exp(-(logit + 3.0)))
    result = evaluate(df, cand, base, EvalConfig(max_auc_drop=1.0, max_log_loss_increase=1.0))
    aa_slice = next(s for s in result.slices if s.name == "carrier=AA")
    assert aa_slice.auc_delta == pytest.approx(0.0, abs=1e-9)
    assert not result.blessed and "carrier=AA" in result.regressed_slices
    assert any("carrier=AA" in r and "log loss" in r and "increase" in r for r in result.reasons)


def test_one_class_eval_set_is_not_blessed() -> None:
    df = make_eval().assign(**{F.LABEL: 0})
    result = evaluate(df, np.full(len(df), 0.1))
    assert not result.blessed
    assert result.reasons[0].startswith("FAIL overall AUC undefined")


def test_evaluation_json_and_report() -> None:
    df = make_eval()
    base = informative(df)
    result = evaluate(df, scramble(df, base, "UA"), base, baseline_version=2)
    raw = json.loads(json.dumps(result.to_dict(), allow_nan=False))  # no NaN leaks into JSON
    assert raw["blessed"] is False and raw["baseline_version"] == 2
    assert raw["overall"]["count"] == len(df)
    by_name = {s["slice"]: s for s in raw["slices"]}
    assert by_name["carrier=HA"]["candidate"]["auc"] is None
    assert by_name["carrier=UA"]["regressed"] is True
    assert sum(map(sum, raw["confusion_matrix"])) == len(df)
    assert len(raw["roc"]["fpr"]) == len(raw["roc"]["threshold"]) <= 101

    html = render_report(result, "flight-delay")
    assert "NOT BLESSED" in html and "carrier=UA" in html and "production version 2" in html
    svgs = re.findall(r"<svg .*?</svg>", html, flags=re.S)
    assert len(svgs) == 3  # slice AUC bars, ROC, calibration
    for svg in svgs:
        ET.fromstring(svg)  # each plot is well-formed SVG
    bars = ET.fromstring(svgs[0])
    fills = [r.get("fill") for r in bars.iter("{http://www.w3.org/2000/svg}rect")]
    assert "#d62728" in fills  # the regressed slice is drawn in red


def test_eval_config_validation() -> None:
    with pytest.raises(ValueError, match="threshold"):
        EvalConfig(threshold=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        EvalConfig(max_auc_drop=-0.1)
    with pytest.raises(ValueError, match="min_slice_count"):
        EvalConfig(min_slice_count=0)
    with pytest.raises(ValueError, match="has 3 scores"):
        evaluate(make_eval(10), np.zeros(10), np.zeros(3))


def test_each_model_is_measured_at_its_own_operating_threshold() -> None:
    df = make_eval()
    y = df[F.LABEL].to_numpy()
    cand = informative(df, seed=1)
    base = informative(df, seed=2)
    mine = OperatingThreshold(0.31, "model metadata")
    theirs = OperatingThreshold(0.44, "registry evaluation of version 3")
    result = evaluate(df, cand, base, baseline_version=3, threshold=mine,
                      baseline_threshold=theirs)  # fmt: skip

    assert result.overall == binary_metrics(y, cand, 0.31)
    assert result.baseline_overall == binary_metrics(y, base, 0.44)
    assert result.overall.threshold == 0.31 and result.baseline_overall.threshold == 0.44
    ua = next(s for s in result.slices if s.name == "carrier=UA")
    mask = (df[F.CARRIER] == "UA").to_numpy()
    assert ua.candidate.recall == binary_metrics(y[mask], cand[mask], 0.31).recall
    assert ua.baseline is not None and ua.baseline.threshold == 0.44
    (_, fp), (_, tp) = result.confusion_matrix
    assert tp + fp == int((cand >= 0.31).sum())
    note = next(r for r in result.reasons if "operating threshold" in r)
    assert "0.3100 (model metadata)" in note and "0.4400 (registry evaluation of version 3)" in note
    raw = result.to_dict()
    assert raw["operating_threshold"] == {"value": 0.31, "source": "model metadata"}
    assert raw["baseline_operating_threshold"]["value"] == 0.44
    assert result.kfp_metrics()["operating_threshold"] == 0.31
    assert "baseline_pr_auc" in result.kfp_metrics()
    assert "0.3100 (model metadata)" in render_report(result)

    # The gate reads threshold-free metrics only: other thresholds, the same verdict.
    plain = evaluate(df, cand, base, baseline_version=3)
    assert plain.blessed == result.blessed and plain.regressed_slices == result.regressed_slices
    assert plain.threshold == OperatingThreshold(0.5, PARAMETER_SOURCE)
    assert plain.overall.auc == result.overall.auc and plain.overall.recall != result.overall.recall


def test_operating_threshold_is_read_from_metadata_with_the_parameter_as_fallback() -> None:
    assert operating_threshold({"operating_threshold": 0.27}, 0.5, "model metadata") == (
        OperatingThreshold(0.27, "model metadata")
    )
    # KFP may hand metadata numbers back as strings; a stored evaluation nests value/source.
    assert operating_threshold({"operating_threshold": "0.27"}, 0.5, "m").value == 0.27
    stored = {"operating_threshold": {"value": 0.33, "source": "model metadata"}}
    assert operating_threshold(stored, 0.5, "registry evaluation of version 1") == (
        OperatingThreshold(0.33, "registry evaluation of version 1")
    )
    assert operating_threshold({"eval_auc": 0.7}, 0.45, "m") == OperatingThreshold(
        0.45, PARAMETER_SOURCE
    )
    assert operating_threshold(None, 0.5, "m").source == PARAMETER_SOURCE
    with pytest.raises(ValueError, match="model metadata: operating_threshold must be in"):
        operating_threshold({"operating_threshold": 1.5}, 0.5, "model metadata")
    with pytest.raises(ValueError, match="operating_threshold is not a number"):
        operating_threshold({"operating_threshold": "high"}, 0.5, "model metadata")
