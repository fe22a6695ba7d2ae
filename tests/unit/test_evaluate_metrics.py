"""Unit tests of the evaluation metrics against hand-computed values (numpy only, no TF)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from components.evaluate.metrics import (
    auc,
    average_precision,
    average_ranks,
    binary_metrics,
    calibration_table,
    confusion,
    expected_calibration_error,
    f1_optimal_threshold,
    f1_score,
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


def test_average_precision_hand_computed() -> None:
    # Descending scores .8(+) .4(-) .35(+) .1(-): at .8 P=1 R=.5, at .35 P=2/3 R=1.
    # AP = .5 * 1 + .5 * 2/3 = 5/6 (no interpolation: the trapezoid would give more).
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    assert average_precision(y, p) == pytest.approx(5 / 6)
    assert average_precision(np.array([0, 1, 1]), np.array([0.1, 0.8, 0.9])) == 1.0
    assert math.isnan(average_precision(np.zeros(3), np.array([0.1, 0.5, 0.6])))


def test_average_precision_tied_scores_enter_together() -> None:
    # .9(+), then a tie at .5 holding one positive and two negatives, then .2(-).
    # Thresholds .9: P=1 R=1/2; .5: P=2/4 R=1; .2: no recall gained. AP = .5*1 + .5*.5 = .75.
    # Taking the tie's positive first would give .5*1 + .5*(2/3) = .833: the order must not count.
    y = np.array([1, 0, 1, 0, 0])
    p = np.array([0.9, 0.5, 0.5, 0.5, 0.2])
    assert average_precision(y, p) == pytest.approx(0.75)
    assert average_precision(y[::-1], p[::-1]) == pytest.approx(0.75)
    # All scores tied: one threshold, precision = the positive rate.
    assert average_precision(np.array([1, 0, 0, 1, 0]), np.full(5, 0.3)) == pytest.approx(0.4)


def test_average_precision_matches_brute_force_on_random_data() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 400)
    p = rng.integers(0, 30, 400) / 30  # many ties
    expected = 0.0
    prev_recall = 0.0
    for t in sorted(set(p.tolist()), reverse=True):  # each distinct threshold, descending
        pred = p >= t
        tp = float((pred & (y == 1)).sum())
        recall = tp / y.sum()
        expected += (recall - prev_recall) * tp / pred.sum()
        prev_recall = recall
    assert average_precision(y, p) == pytest.approx(expected, abs=1e-12)
    # A random ranking scores about the positive rate; a perfect one 1.
    noise = rng.random(20000)
    labels = rng.random(20000) < 0.2
    assert average_precision(labels, noise) == pytest.approx(labels.mean(), abs=0.02)


def test_f1_at_the_threshold_and_undefined_cases() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    p = np.array([0.9, 0.6, 0.3, 0.7, 0.2, 0.1, 0.5, 0.5])
    m = binary_metrics(y, p, 0.5)  # precision 3/5, recall 3/4
    assert m.f1 == pytest.approx(2 * 0.6 * 0.75 / (0.6 + 0.75))
    assert m.pr_auc == pytest.approx(average_precision(y, p))
    assert math.isnan(binary_metrics(y, p, 0.95).f1)  # no predicted positive: precision nan
    assert f1_score(0.0, 0.0) == 0.0
    assert m.to_dict()["f1"] == pytest.approx(m.f1)


def test_f1_optimal_threshold_matches_brute_force() -> None:
    # Hand case, F1 = 2tp / (2tp + fp + fn): at .9 tp1 fp0 fn1 -> 2/3; at .5 tp2 fp2 fn0 -> 2/3;
    # at .2 tp2 fp3 -> 4/7. The tie goes to the higher threshold, .9.
    y = np.array([1, 0, 1, 0, 0])
    p = np.array([0.9, 0.5, 0.5, 0.5, 0.2])
    assert f1_optimal_threshold(y, p) == (0.9, pytest.approx(2 / 3))

    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, 500)
    p = np.clip(0.3 * y + rng.random(500) * 0.7, 0, 1).round(2)
    best_t, best_f1 = None, -1.0
    for t in sorted(set(p.tolist()), reverse=True):
        f1 = binary_metrics(y, p, t).f1
        if f1 > best_f1 + 1e-15:
            best_t, best_f1 = t, f1
    t, f1 = f1_optimal_threshold(y, p)
    assert t == best_t and f1 == pytest.approx(best_f1)
    with pytest.raises(ValueError, match="no positive"):
        f1_optimal_threshold(np.zeros(4), np.array([0.1, 0.2, 0.3, 0.4]))
