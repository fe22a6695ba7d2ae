"""Unit tests of the evaluation metrics against hand-computed values (numpy only, no TF)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from components.evaluate.metrics import (
    auc,
    average_ranks,
    binary_metrics,
    calibration_table,
    confusion,
    expected_calibration_error,
    log_loss,
    roc_curve,
)

pytestmark = pytest.mark.unit


def test_average_ranks_give_ties_the_mean_rank() -> None:
    assert average_ranks(np.array([0.3, 0.1, 0.3, 0.2, 0.3])).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]


def test_auc_hand_computed() -> None:
    # Positive/negative pairs: (.35>.1) (.35<.4) (.8>.1) (.8>.4) -> 3 of 4 ordered correctly.
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)


def test_auc_counts_ties_as_one_half() -> None:
    # Pairs (pos, neg): (.5,.2)=1 (.5,.5)=.5 (.9,.2)=1 (.9,.5)=1 (.5,.2)=1 (.5,.5)=.5 -> 5/6.
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.2, 0.5, 0.5, 0.9, 0.5])
    assert auc(y, p) == pytest.approx(5 / 6)
    assert auc(np.array([0, 1, 0, 1]), np.full(4, 0.3)) == pytest.approx(0.5)


def test_auc_perfect_inverse_and_one_class() -> None:
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    assert auc(y, p) == 1.0
    assert auc(y, 1 - p) == 0.0
    assert math.isnan(auc(np.ones(4), np.array([0.1, 0.5, 0.6, 0.9])))
    assert math.isnan(auc(np.zeros(3), np.array([0.1, 0.5, 0.6])))


def test_auc_matches_pairwise_definition_on_random_data() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    p = rng.integers(0, 20, 300) / 20  # many ties
    pos, neg = p[y == 1], p[y == 0]
    diff = pos[:, None] - neg[None, :]
    expected = ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size
    assert auc(y, p) == pytest.approx(expected, abs=1e-12)


def test_log_loss_hand_computed_and_clipped() -> None:
    y = np.array([1, 0])
    p = np.array([0.8, 0.4])
    assert log_loss(y, p) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    # A certain mistake is capped by the clip, not infinite.
    assert log_loss(np.array([1]), np.array([0.0])) == pytest.approx(-math.log(1e-7))


def test_confusion_precision_recall_at_threshold() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    p = np.array([0.9, 0.6, 0.3, 0.7, 0.2, 0.1, 0.5, 0.5])
    assert confusion(y, p, 0.5) == (2, 2, 1, 3)  # tn, fp, fn, tp; 0.5 counts as positive
    m = binary_metrics(y, p, 0.5)
    assert m.accuracy == pytest.approx(5 / 8)
    assert m.precision == pytest.approx(3 / 5)
    assert m.recall == pytest.approx(3 / 4)
    assert m.positive_rate == pytest.approx(0.5)
    assert m.predicted_positive_rate == pytest.approx(5 / 8)
    assert m.mean_score == pytest.approx(p.mean())
    strict = binary_metrics(y, p, 0.95)
    assert math.isnan(strict.precision) and strict.recall == 0.0
    assert strict.to_dict()["precision"] is None


def test_calibration_bins_and_ece() -> None:
    y = np.array([0, 1, 1, 1, 0])
    p = np.array([0.05, 0.15, 0.95, 0.95, 1.0])  # 1.0 falls in the last bin
    table = calibration_table(y, p)
    assert [b["count"] for b in table] == [1, 1, 0, 0, 0, 0, 0, 0, 0, 3]
    assert table[9]["mean_score"] == pytest.approx((0.95 + 0.95 + 1.0) / 3)
    assert table[9]["positive_rate"] == pytest.approx(2 / 3)
    expected = (
        1 / 5 * abs(0.05 - 0) + 1 / 5 * abs(0.15 - 1) + 3 / 5 * abs((0.95 + 0.95 + 1.0) / 3 - 2 / 3)
    )
    assert expected_calibration_error(y, p) == pytest.approx(expected)
    # Perfectly calibrated within each bin: ECE 0.
    assert expected_calibration_error(np.array([0, 1, 0, 1]), np.full(4, 0.5)) == 0.0


def test_roc_curve_points() -> None:
    fpr, tpr, thr = roc_curve(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert fpr == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert thr[1:] == [0.8, 0.4, 0.35, 0.1] and thr[0] > 0.8 and math.isfinite(thr[0])
    # Trapezoid area under the curve equals the rank AUC.
    assert np.trapz(tpr, fpr) == pytest.approx(0.75)
    rng = np.random.default_rng(0)
    fpr, tpr, thr = roc_curve(rng.integers(0, 2, 5000), rng.random(5000), max_points=101)
    assert len(fpr) == len(tpr) == len(thr) <= 101
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert roc_curve(np.ones(3), np.array([0.1, 0.2, 0.3])) == ([], [], [])


def test_metrics_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        auc(np.array([0, 1]), np.array([0.5]))
    with pytest.raises(ValueError, match="0 or 1"):
        auc(np.array([0, 2]), np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="NaN"):
        log_loss(np.array([0, 1]), np.array([0.5, np.nan]))
