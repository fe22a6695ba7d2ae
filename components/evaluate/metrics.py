"""Binary classification metrics in plain numpy (the component image has no scikit-learn;
only the quality benchmark installs it, from the dev requirements).

Every function takes labels ``y`` (0/1) and scores ``p`` (probabilities in [0, 1]) as 1-D
arrays of equal length. Undefined values (AUC of a one-class set, precision with no predicted
positive) are ``nan``; the evaluation turns them into ``None`` in JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mlops.features import DECISION_THRESHOLD

# Log loss clips probabilities so one confident mistake costs ~16 nats, not infinity.
LOG_LOSS_EPS = 1e-7
CALIBRATION_BINS = 10


def _arrays(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} != {p.size}")
    if y.size and not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    if np.isnan(p).any():
        raise ValueError(f"{int(np.isnan(p).sum())} scores are NaN")
    return y, p


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` with ties given the mean of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # Start index of each run of equal values, and the run each sorted element belongs to.
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], sorted_x.size]
    run_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    run_of = np.repeat(np.arange(starts.size), ends - starts)
    ranks = np.empty_like(x, dtype=np.float64)
    ranks[order] = run_rank[run_of]
    return ranks


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic; ties count one half.

    Returns ``nan`` when ``y`` holds only one class.
    """
    y, p = _arrays(y, p)
    n_pos = float(y.sum())
    n_neg = float(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = float(average_ranks(p)[y == 1].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy in nats, probabilities clipped to [eps, 1 - eps]."""
    y, p = _arrays(y, p)
    if y.size == 0:
        return float("nan")
    p = np.clip(p, LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))


def confusion(y: np.ndarray, p: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    """``(tn, fp, fn, tp)`` with a positive prediction when ``p >= threshold``."""
    y, p = _arrays(y, p)
    pred = p >= threshold
    pos = y == 1
    return (
        int((~pred & ~pos).sum()),
        int((pred & ~pos).sum()),
        int((~pred & pos).sum()),
        int((pred & pos).sum()),
    )


def _ratio(num: float, den: float) -> float:
    return num / den if den else float("nan")


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """ECE over equal-width probability bins: sum of bin share x |mean score - positive rate|."""
    table = calibration_table(y, p, bins)
    n = sum(b["count"] for b in table)
    if n == 0:
        return float("nan")
    return float(
        sum(b["count"] / n * abs(b["mean_score"] - b["positive_rate"]) for b in table if b["count"])
    )


def _runs(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct score, descending: ``(threshold, tp, fp)`` when ``p >= threshold`` is
    predicted positive. Tied scores enter together, as one threshold."""
    order = np.argsort(-p, kind="mergesort")
    p_sorted, y_sorted = p[order], y[order]
    last_of_run = np.r_[p_sorted[1:] != p_sorted[:-1], True] if p.size else np.array([], bool)
    tps = np.cumsum(y_sorted)[last_of_run]
    fps = np.cumsum(1.0 - y_sorted)[last_of_run]
    return p_sorted[last_of_run], tps, fps


def average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the precision-recall curve as the exact step sum ``sum_k (R_k - R_k-1) P_k``.

    ``k`` runs over the distinct scores, descending (``p >= score`` predicted positive), so
    tied scores enter together and no interpolation flatters the curve; the same definition as
    scikit-learn's ``average_precision_score``. A random ranking scores the positive rate.
    Returns ``nan`` when ``y`` holds no positive.
    """
    y, p = _arrays(y, p)
    n_pos = float(y.sum())
    if n_pos == 0:
        return float("nan")
    _, tps, fps = _runs(y, p)
    precision = tps / (tps + fps)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def f1_score(precision: float, recall: float) -> float:
    """Harmonic mean of precision and recall; ``nan`` when either is undefined, 0 when both
    are 0."""
    if not (np.isfinite(precision) and np.isfinite(recall)):
        return float("nan")
    if precision + recall == 0:
        return 0.0
    return float(2.0 * precision * recall / (precision + recall))


def f1_optimal_threshold(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """The threshold that maximises F1 on ``(y, p)``, and that F1.

    Candidates are the distinct scores (``p >= threshold`` predicted positive, as
    :func:`confusion`); among equal F1 the highest threshold wins (fewer alarms). Meant for a
    validation split: choosing it on the eval split would leak the eval labels.

    Raises:
        ValueError: ``y`` holds no positive (F1 is 0 at every threshold).
    """
    y, p = _arrays(y, p)
    n_pos = float(y.sum())
    if n_pos == 0:
        raise ValueError("no positive labels: F1 is 0 at every threshold")
    thresholds, tps, fps = _runs(y, p)
    # F1 = 2 tp / (2 tp + fp + fn) with fn = n_pos - tp; the denominator is never 0 here.
    f1 = 2.0 * tps / (tps + fps + n_pos)
    best = int(np.argmax(f1))  # first maximum = highest threshold (thresholds descend)
    return float(thresholds[best]), float(f1[best])


def calibration_table(
    y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS
) -> list[dict[str, float]]:
    """Per equal-width bin: its bounds, count, mean score and observed positive rate."""
    y, p = _arrays(y, p)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds [edge_i, edge_i+1); the last bin also holds 1.0.
    idx = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    out = []
    for i in range(bins):
        mask = idx == i
        count = int(mask.sum())
        out.append(
            {
                "lower": float(edges[i]),
                "upper": float(edges[i + 1]),
                "count": count,
                "mean_score": float(p[mask].mean()) if count else float("nan"),
                "positive_rate": float(y[mask].mean()) if count else float("nan"),
            }
        )
    return out


def roc_curve(
    y: np.ndarray, p: np.ndarray, max_points: int = 101
) -> tuple[list[float], list[float], list[float]]:
    """ROC points ``(fpr, tpr, threshold)`` from (0, 0) to (1, 1), at most ``max_points``.

    A score ``>= threshold`` is predicted positive. Thresholds are the distinct scores,
    descending; the (0, 0) point gets a threshold just above the top score, finite so that it
    fits in JSON metadata. Empty lists when ``y`` holds one class.
    """
    y, p = _arrays(y, p)
    n_pos = float(y.sum())
    n_neg = float(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return [], [], []
    thresholds, tps, fps = _runs(y, p)
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    thr = np.r_[float(thresholds[0]) + 1e-6, thresholds]
    if fpr.size > max_points:
        keep = np.unique(np.linspace(0, fpr.size - 1, max_points).round().astype(int))
        fpr, tpr, thr = fpr[keep], tpr[keep], thr[keep]
    return fpr.tolist(), tpr.tolist(), thr.tolist()


@dataclass(frozen=True)
class BinaryMetrics:
    """Metrics of one set of examples (overall or one slice).

    Attributes:
        count: Examples.
        positives: Examples with label 1.
        auc: ROC AUC (nan for one class).
        log_loss: Mean cross-entropy, nats.
        accuracy: Share of correct predictions at the threshold.
        precision: Of predicted positives, the share that are positive (nan if none predicted).
        recall: Of positives, the share predicted positive (nan if none).
        f1: Harmonic mean of precision and recall at the threshold.
        pr_auc: Average precision (area under the precision-recall curve, exact step sum);
            independent of the threshold. A random ranking scores ``positive_rate``.
        positive_rate: Observed share of positives (the label rate).
        predicted_positive_rate: Share predicted positive at the threshold.
        mean_score: Mean predicted probability; calibrated models match ``positive_rate``.
        calibration_error: Expected calibration error over 10 equal-width bins.
        threshold: The decision threshold of accuracy, precision, recall and F1 (the model's
            operating threshold in an evaluation).
    """

    count: int
    positives: int
    auc: float
    log_loss: float
    accuracy: float
    precision: float
    recall: float
    f1: float
    pr_auc: float
    positive_rate: float
    predicted_positive_rate: float
    mean_score: float
    calibration_error: float
    threshold: float

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready: nan becomes ``None``."""
        return {k: _json_number(v) for k, v in asdict(self).items()}


def _json_number(v: float | int) -> float | int | None:
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def binary_metrics(
    y: np.ndarray, p: np.ndarray, threshold: float = DECISION_THRESHOLD
) -> BinaryMetrics:
    """All metrics of one set of examples at a decision threshold."""
    y, p = _arrays(y, p)
    tn, fp, fn, tp = confusion(y, p, threshold)
    n = y.size
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return BinaryMetrics(
        count=int(n),
        positives=int(tp + fn),
        auc=auc(y, p),
        log_loss=log_loss(y, p),
        accuracy=_ratio(tp + tn, n),
        precision=precision,
        recall=recall,
        f1=f1_score(precision, recall),
        pr_auc=average_precision(y, p),
        positive_rate=_ratio(tp + fn, n),
        predicted_positive_rate=_ratio(tp + fp, n),
        mean_score=float(p.mean()) if n else float("nan"),
        calibration_error=expected_calibration_error(y, p),
        threshold=float(threshold),
    )
