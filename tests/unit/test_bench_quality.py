"""The quality benchmark's honest-evaluation plumbing: the time split and where thresholds come
from (validation, never eval), on seeded synthetic rows; the fitting itself runs in the bench."""

import numpy as np
import pandas as pd
import pytest

from bench.bench_quality import compare, measure, three_way_split
from components.evaluate.metrics import binary_metrics, f1_optimal_threshold
from mlops import features as F
from mlops.errors import DataError

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


def hourly_rows(days: int = 30, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2013-01-01", periods=days * 24, freq="h", tz="UTC")
    n = len(ts)
    return pd.DataFrame(
        {
            F.EVENT_TIMESTAMP: ts,
            F.LABEL: rng.integers(0, 2, n),
            F.CARRIER: rng.choice(["UA", "AA"], n),
            F.ORIGIN: rng.choice(["EWR", "JFK"], n),
            F.SCHED_DEP_HOUR: ts.hour.astype(float),
        }
    )


def test_three_way_split_cuts_at_days_in_time_order() -> None:
    df = hourly_rows(30)
    train, val, ev, val_cut, eval_cut = three_way_split(df, 0.1, 0.2)
    assert len(train) + len(val) + len(ev) == len(df)
    cuts = [pd.Timestamp(val_cut), pd.Timestamp(eval_cut)]
    assert all(cut == cut.floor("D") for cut in cuts)
    assert train[F.EVENT_TIMESTAMP].max() < cuts[0] <= val[F.EVENT_TIMESTAMP].min()
    assert val[F.EVENT_TIMESTAMP].max() < cuts[1] <= ev[F.EVENT_TIMESTAMP].min()
    # 30 days: the 0.8 quantile falls inside day 24 and is floored to its start, so eval holds
    # the last 7 days; validation is cut from the 23 days before it at 0.1 / 0.8 of them: the
    # 0.875 quantile falls inside day 21, so validation holds days 21-23.
    assert (len(ev), len(val)) == (7 * 24, 3 * 24)
    with pytest.raises(DataError, match="too short"):
        three_way_split(hourly_rows(1), 0.1, 0.2)


def test_threshold_is_chosen_on_validation_and_applied_to_eval() -> None:
    rng = np.random.default_rng(3)
    ev = hourly_rows(20, seed=1)
    y_val = rng.integers(0, 2, 2000).astype(float)
    p_val = np.clip(0.25 * y_val + rng.random(2000) * 0.75, 0, 1)
    y_ev = ev[F.LABEL].to_numpy(dtype=float)
    # Eval scores shifted up: the eval-optimal threshold differs from the validation one.
    p_ev = np.clip(0.25 * y_ev + rng.random(len(ev)) * 0.75 + 0.2, 0, 1)
    fig = measure("m", y_val, p_val, ev, p_ev)
    t_val, _ = f1_optimal_threshold(y_val, p_val)
    assert fig["m_operating_threshold"] == t_val != f1_optimal_threshold(y_ev, p_ev)[0]
    assert fig["m_eval_recall"] == binary_metrics(y_ev, p_ev, t_val).recall
    assert fig["m_eval_pr_auc"] == binary_metrics(y_ev, p_ev).pr_auc
    assert set(fig["_slices"]) == {"carrier=AA", "carrier=UA", "origin=EWR", "origin=JFK"}
    ua = (ev[F.CARRIER] == "UA").to_numpy()
    assert fig["_slices"]["carrier=UA"]["auc"] == binary_metrics(y_ev[ua], p_ev[ua]).auc


def test_compare_reports_the_gap_to_gradient_boosted_trees() -> None:
    figures = {"model_eval_auc": 0.845, "hgb_eval_auc": 0.86, "logistic_eval_auc": 0.80}
    slices = {"model": {"carrier=UA": {"auc": 0.80}, "carrier=AA": {"auc": 0.85}},
              "hgb": {"carrier=UA": {"auc": 0.83}, "carrier=AA": {"auc": 0.85}}}  # fmt: skip
    compare(figures, slices)
    assert figures["model_minus_hgb_eval_auc"] == -0.015
    assert figures["target_eval_auc_ge_0.84"] is True
    assert figures["target_within_0.01_of_hgb"] is False
    assert figures["model_minus_hgb_worst_slice"] == "carrier=UA: -0.0300"
