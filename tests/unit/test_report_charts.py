"""The run report's SVG charts and tables: DAG layout from the compiled IR, precision-recall
from ROC points, first-model tables without ``None``, and the ``models compare`` parser.

The browser-level checks (what Chromium shows) are in
``tests/integration/test_run_report_page.py``; these pin the pieces without TensorFlow.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pytest

from components.evaluate.metrics import roc_curve
from mlops.registry import add_models_parser
from mlops.report import (
    StepRecord,
    add_compare_parser,
    build_report,
    dag_nodes,
    overall_table,
    pipeline_dependencies,
    slice_table,
)
from mlops.report_charts import (
    BarRow,
    bar_chart_svg,
    dag_levels,
    pr_points,
    state_color,
    transitive_reduction,
)
from mlops.runner import STEPS

pytestmark = pytest.mark.unit


def test_dag_from_the_compiled_ir_has_every_step_in_flow_order() -> None:
    deps = pipeline_dependencies()
    assert set(deps) == set(STEPS)
    # push-op waits for five tasks in the IR; all but evaluate-op are implied by it.
    assert len(deps["push-op"]) == 5
    assert transitive_reduction(deps)["push-op"] == ["evaluate-op"]
    levels = dag_levels(dag_nodes([StepRecord(n) for n in STEPS], deps))
    assert [levels[n] for n in STEPS] == list(range(len(STEPS)))


def test_dag_falls_back_to_run_order_without_the_ir(tmp_path: Path) -> None:
    assert pipeline_dependencies(tmp_path / "missing.yaml") == {}
    nodes = dag_nodes([StepRecord("a"), StepRecord("b"), StepRecord("c")], {})
    assert [n.after for n in nodes] == [(), ("a",), ("b",)]


def test_state_colour_reads_the_first_word() -> None:
    assert state_color("FAILURE (task 'train-op' failed)") == state_color("FAILURE")
    assert state_color("SUCCESS") != state_color("FAILURE")
    assert state_color("NOT RUN") == state_color("SKIPPED")


def test_precision_recall_from_roc_matches_counting_at_each_threshold() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(float)
    p = np.clip(0.3 * y + rng.random(400) * 0.7, 0, 1).round(2)  # ties, like real scores
    fpr, tpr, thr = roc_curve(y, p)
    points = pr_points({"fpr": fpr, "tpr": tpr}, int(y.sum()), y.size)
    # The (0, 0) point predicts nothing positive and is dropped; every other is counted.
    assert len(points) == len(thr) - 1
    for (recall, precision), t in zip(points, thr[1:], strict=True):
        pred = p >= t
        assert recall == pytest.approx((pred & (y == 1)).sum() / y.sum())
        assert precision == pytest.approx((pred & (y == 1)).sum() / pred.sum())


def _slice(name: str, auc: float | None, baseline_auc: float | None) -> dict:
    return {
        "slice": name, "count": 100, "gating": True, "auc": auc, "baseline_auc": baseline_auc,
        "log_loss": 0.5, "auc_delta": None if baseline_auc is None else 0.0,
        "candidate": {}, "baseline": None, "regressions": [],
    }  # fmt: skip


def test_first_model_slice_table_leaves_out_baseline_columns() -> None:
    table = slice_table({"slices": [_slice("carrier=UA", 0.7, None), _slice("x=1", None, None)]})
    assert "baseline_auc" not in table and "auc_delta" not in table
    assert "None" not in table
    assert "<td>-</td>" in table  # one slice's undefined AUC, the column kept for the other


def test_bar_chart_marks_each_rows_gate_and_flags() -> None:
    svg = bar_chart_svg(
        "AUC per slice",
        [BarRow("a", [0.7, 0.72], 0.67), BarRow("b", [0.5, None], 0.6, flagged=True)],
        ["candidate", "production"],
        "slice-auc",
        "baseline - allowed drop",
    )
    assert svg.count('class="bar" ') == 3  # the missing value is not drawn
    assert re.findall(r'class="limit" data-value="([^"]+)"', svg) == ["0.67", "0.6"]
    assert 'data-label="b" data-flagged="True"' in svg


def test_report_without_evaluation_draws_dag_and_no_evaluation(tmp_path: Path) -> None:
    steps = [StepRecord("ingest-op", "SUCCESS", 0.0, 1.5), StepRecord("validate-op", "FAILURE")]
    page = build_report(
        "r", steps, {"validation": "FAILED", "blessed": None}, tmp_path / "r.html"
    ).read_text()
    assert 'data-step="ingest-op" data-state="SUCCESS"' in page
    assert 'data-step="validate-op" data-state="FAILURE"' in page
    assert "1.5 s" in page
    assert 'id="evaluation"' not in page and "blessed" not in page


def test_models_compare_parser_reads_registry_and_model_from_models() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_models_parser(sub)
    (models_sub,) = [
        a for a in sub.choices["models"]._actions if isinstance(a, argparse._SubParsersAction)
    ]
    add_compare_parser(models_sub)
    args = parser.parse_args(["models", "--model-name", "m", "compare", "3", "4"])
    assert (args.models_command, args.a, args.b, args.model_name) == ("compare", 3, 4, "m")
    assert args.out is None


def test_run_report_shows_overall_metrics_and_threshold_sources(tmp_path: Path) -> None:
    metrics = {"count": 1000, "auc": 0.86, "pr_auc": 0.61, "f1": 0.55, "threshold": 0.31}
    evaluation = {
        "overall": metrics, "baseline_version": 2,
        "baseline_overall": {**metrics, "auc": 0.84, "threshold": 0.5},
        "operating_threshold": {"value": 0.31, "source": "model metadata"},
        "baseline_operating_threshold": {"value": 0.5, "source": "decision_threshold parameter"},
        "slices": [_slice("carrier=UA", 0.7, 0.69)],
    }  # fmt: skip
    page = build_report(
        "r", [StepRecord("evaluate-op", "SUCCESS")], {}, tmp_path / "r.html", evaluation, {}
    ).read_text()
    table = re.search(r'<table id="overall-metrics">.*?</table>', page, flags=re.S)
    assert table is not None
    text = table.group(0)
    assert "<th>production v2</th>" in text
    assert "<tr><th>pr_auc</th><td>0.61</td><td>0.61</td></tr>" in text
    assert "<tr><th>threshold</th><td>0.31</td><td>0.5</td></tr>" in text
    assert "<td>model metadata</td><td>decision_threshold parameter</td>" in text
    assert overall_table({}) == ""
