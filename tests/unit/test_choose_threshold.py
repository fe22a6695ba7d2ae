"""The operating threshold train chooses on the validation split: the F1-best distinct score."""

import numpy as np
import pytest

from components.train.core import choose_threshold

pytestmark = pytest.mark.unit


def brute_force(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Try every distinct score as the threshold (>= is 'delayed'); the higher one on ties."""
    best = (-1.0, 0.0)
    for t in sorted(set(p.tolist())):
        pred = p >= t
        tp = int((pred & (y == 1)).sum())
        f1 = 2 * tp / (pred.sum() + y.sum())
        if f1 >= best[0]:
            best = (f1, t)
    return best[1], best[0]


def test_threshold_is_the_f1_best_score_with_ties_and_repeats() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        n = int(rng.integers(5, 200))
        y = rng.integers(0, 2, n)
        y[0] = 1
        # Rounded scores make many ties, which must be cut only between distinct values.
        p = np.round(np.clip(0.3 * y + rng.normal(0.4, 0.2, n), 0, 1), 2)
        threshold, f1 = choose_threshold(y, p)
        want_t, want_f1 = brute_force(y, p)
        assert threshold == pytest.approx(want_t)
        assert f1 == pytest.approx(want_f1)


def test_hand_example() -> None:
    y = np.array([1, 0, 1, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    # >= 0.7 gives tp 2, predicted 3: F1 = 4 / 5; >= 0.9 gives F1 = 2 / 3.
    assert choose_threshold(y, p) == (pytest.approx(0.7), pytest.approx(0.8))


def test_no_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="no delayed flight"):
        choose_threshold(np.zeros(4), np.linspace(0, 1, 4))
