"""The run report and ``models compare`` pages, built from real evaluate and validate outputs and
looked at in headless Chromium.

Evaluate runs on the real January 2013 eval split with the hand-weighted SavedModels of
``tests/model_fixtures.py``; validate measures February's drift against January's statistics
with TFDV. The pages are then rendered by Chromium (DOM dump and screenshot), the way a user
opens ``runs/<run>/report.html``, so the assertions are on what the browser shows.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from model_fixtures import export_logistic_model  # tests/ is on sys.path via its conftest

from components.evaluate.core import EvalConfig, read_blessing, run_evaluation
from components.push.core import push
from components.validate.core import validate
from mlops.registry import ModelRegistry
from mlops.report import StepRecord, build_report, pipeline_dependencies
from mlops.runner import STEPS

pytestmark = pytest.mark.integration

MODEL = "flight-delay"
VALID = {"ok": True, "anomalies": []}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Text(HTMLParser):
    """The text a browser shows: character data outside <style>, <script> and <title>."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "title"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "title"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def visible_text(dom: str) -> str:
    parser = _Text()
    parser.feed(dom)
    return " ".join(parser.parts)


def _browser() -> tuple[Callable[[Path], str], Callable[..., Path]]:
    from tools.browser import chromium, dump_dom, screenshot

    try:
        chromium()
    except FileNotFoundError:
        subprocess.run(["bash", "tools/install-chromium.sh"], check=True)
    return dump_dom, screenshot


@pytest.fixture(scope="module")
def work(
    training_set: Callable[[str, str], tuple[pd.DataFrame, pd.DataFrame]],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, object]:
    """Real outputs: drift of February vs January, a first model, a regressed candidate, and a
    registry holding two blessed versions."""
    root = tmp_path_factory.mktemp("report-page")
    jan_train, jan_eval = training_set("2013-01", "2013-01")
    feb_train, _ = training_set("2013-02", "2013-02")
    paths = {}
    for name, df in (("jan", jan_train), ("feb", feb_train), ("eval", jan_eval)):
        paths[name] = root / f"{name}.parquet"
        df.to_parquet(paths[name], index=False)
    validate([paths["jan"]], root / "val-jan")
    verdict = validate([paths["feb"]], root / "val-feb", previous_stats_path=root / "val-jan")
    assert verdict.drift, "February vs January should measure drift"

    models = {
        "good": export_logistic_model(root / "m-good"),
        "worse": export_logistic_model(root / "m-worse", carrier_bonus={"EV": 2.0}),
        "other": export_logistic_model(root / "m-other", hour_weight=0.13),
    }
    registry_uri = str(root / "registry")

    def evaluate(name: str, out: str) -> dict:
        run_evaluation(
            paths["eval"], models[name], registry_uri, MODEL, EvalConfig(),
            root / out / "report.html", root / out / "blessing.json",
        )  # fmt: skip
        return read_blessing(root / out / "blessing.json")

    first = evaluate("good", "ev-first")
    assert first["baseline_overall"] is None
    assert push(registry_uri, MODEL, models["good"], first, VALID, ["2013-01"], "t", "e").pushed
    regressed = evaluate("worse", "ev-worse")
    assert not regressed["blessed"] and regressed["regressed_slices"]
    other = evaluate("other", "ev-other")
    assert other["blessed"], other["reasons"]
    assert push(registry_uri, MODEL, models["other"], other, VALID, ["2013-01"], "t", "e").pushed
    return {
        "root": root,
        "verdict_dir": root / "val-feb",
        "first": first,
        "regressed": regressed,
        "registry": registry_uri,
    }


def _steps(verdict_dir: Path, failed_from: str | None = None) -> list[StepRecord]:
    """Step records as the runner keeps them: times, status, and the validate verdict output."""
    out, t, state = [], 1_000.0, "SUCCESS"
    for i, name in enumerate(STEPS):
        if name == failed_from:
            state = "FAILURE"
        elif state == "FAILURE":
            state = "NOT RUN"
        ran = state != "NOT RUN"
        seconds = 2.0 + 3 * i
        step = StepRecord(name, state, t if ran else None, t + seconds if ran else None)
        if name == "validate-op":
            step.outputs = {"verdict": {"uri": "", "metadata": {}, "path": str(verdict_dir)}}
        out.append(step)
        t += seconds
    return out


def test_first_model_report_draws_dag_curves_and_drift_without_none(
    work: dict, tmp_path: Path
) -> None:
    dump_dom, screenshot = _browser()
    summary = {"blessed": True, "production version": None, "wall time": "40.0 s"}
    page = build_report(
        "first", _steps(work["verdict_dir"]), summary, tmp_path / "report.html", work["first"]
    )
    dom = dump_dom(page)
    text = visible_text(dom)

    # The DAG: every step of the compiled pipeline, a box with its state, edges from the IR.
    nodes = re.findall(r'class="dag-node" data-step="([^"]+)" data-state="([^"]+)"', dom)
    assert sorted(n for n, _ in nodes) == sorted(STEPS)
    assert {s for _, s in nodes} == {"SUCCESS"}
    deps = pipeline_dependencies()
    assert deps["train-op"] == ["transform-op"]
    assert 'data-from="transform-op" data-to="train-op"' in dom
    assert dom.count('class="timeline-bar"') == len(STEPS)
    assert "17.0 s" in text  # the sixth step's duration, on its box and its bar

    # Curves: the candidate only (no production to compare with), with points.
    for kind in ("roc", "pr", "calibration"):
        chart = re.search(rf'<svg class="chart {kind}".*?</svg>', dom, re.S)
        assert chart, kind
        series = re.findall(r'data-series="([^"]+)" data-points="(\d+)"', chart.group(0))
        assert [s for s, _ in series] == ["candidate"]
        assert int(series[0][1]) >= (5 if kind == "calibration" else 20)
    # Per-slice AUC: a bar per slice, the first model's absolute gate marked on each row.
    auc_chart = re.search(r'<svg class="chart slice-auc".*?</svg>', dom, re.S)
    assert auc_chart
    assert auc_chart.group(0).count('class="bar-row"') == len(work["first"]["slices"])
    assert "min AUC (first model, overall)" in auc_chart.group(0)
    assert 'data-series="production' not in dom

    # Drift ranked by value / threshold, the threshold marked.
    drift = re.search(r'<svg class="chart drift".*?</svg>', dom, re.S)
    assert drift
    labels = re.findall(r'class="bar-row" data-label="([^" ]+) ', drift.group(0))
    assert sorted(labels) == sorted(read_verdict_json(work["verdict_dir"])["drift"])
    ratios = [
        float(v) for v in re.findall(r'class="bar" [^>]*data-value="([^"]+)"', drift.group(0))
    ]
    assert ratios == sorted(ratios, reverse=True)

    # A first model prints no None: baseline columns and unknown decisions are left out.
    assert "None" not in text
    assert "baseline_auc" not in text and "production version" not in text

    png = screenshot(page, tmp_path / "first.png", size="1280,3200")
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 50_000


def read_verdict_json(folder: Path) -> dict:
    import json

    from mlops.artifacts import VERDICT_FILE

    return json.loads((folder / VERDICT_FILE).read_text())


def test_regressed_candidate_report_marks_baseline_gates_and_failed_step(
    work: dict, tmp_path: Path
) -> None:
    dump_dom, screenshot = _browser()
    page = build_report(
        "regressed",
        _steps(work["verdict_dir"], failed_from="push-op"),
        {"blessed": False},
        tmp_path / "report.html",
        work["regressed"],
    )
    dom = dump_dom(page)
    states = dict(re.findall(r'class="dag-node" data-step="([^"]+)" data-state="([^"]+)"', dom))
    assert states["push-op"] == "FAILURE" and states["deploy-op"] == "NOT RUN"
    assert states["evaluate-op"] == "SUCCESS"
    # Candidate and production v1 on every curve.
    roc = re.search(r'<svg class="chart roc".*?</svg>', dom, re.S)
    assert roc
    assert re.findall(r'data-series="([^"]+)"', roc.group(0)) == ["candidate", "production v1"]
    # Per slice: each gate is relative to the baseline, and every regressed slice is flagged
    # on the chart of the metric that regressed.
    charts = {
        kind: re.search(rf'<svg class="chart {kind}".*?</svg>', dom, re.S)
        for kind in ("slice-auc", "slice-logloss")
    }
    assert all(charts.values())
    auc_svg, ll_svg = (m.group(0) for m in charts.values() if m)
    assert "baseline - allowed drop" in auc_svg and "baseline + allowed increase" in ll_svg
    regressed = [s for s in work["regressed"]["slices"] if s["regressed"]]
    assert regressed
    for s in regressed:
        flag = rf'data-label="{re.escape(s["slice"])} \(n=\d+\)" data-flagged="True"'
        if any(r.startswith("AUC") for r in s["regressions"]):
            assert re.search(flag, auc_svg), s["slice"]
        if any(r.startswith("log loss") for r in s["regressions"]):
            assert re.search(flag, ll_svg), s["slice"]
    # EV's probabilities are too high: its log loss crossed baseline + allowed increase.
    ev = next(s for s in work["regressed"]["slices"] if s["slice"] == "carrier=EV")
    assert ev["regressed"]
    limit = ev["baseline"]["log_loss"] + EvalConfig().max_slice_log_loss_increase
    row = re.search(r'data-label="carrier=EV .*?</g>', ll_svg, re.S)
    assert row and 'data-flagged="True"' in row.group(0)
    assert f'class="limit" data-value="{limit:.6g}"' in row.group(0)
    assert 'id="slices"' in dom and "baseline_auc" in visible_text(dom)
    png = screenshot(page, tmp_path / "regressed.png", size="1280,3200")
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_models_compare_page_shows_both_versions(work: dict, tmp_path: Path) -> None:
    dump_dom, screenshot = _browser()
    registry = ModelRegistry(work["registry"])
    assert [v.version for v in registry.versions(MODEL)] == [1, 2]
    # Through the CLI a user types: `mlops models compare 1 2`.
    from mlops.cli import main as mlops_main

    page = tmp_path / "compare.html"
    argv = ["models", "--registry", work["registry"], "--model-name", MODEL,
            "compare", "1", "2", "--out", str(page)]  # fmt: skip
    assert mlops_main(argv) == 0 and page.is_file()
    dom = dump_dom(page)
    text = visible_text(dom)
    assert "version 1 vs version 2" in text
    for kind in ("roc", "pr", "calibration"):
        chart = re.search(rf'<svg class="chart {kind}".*?</svg>', dom, re.S)
        assert chart, kind
        assert re.findall(r'data-series="([^"]+)" data-points', chart.group(0)) == ["v1", "v2"]
    auc_chart = re.search(r'<svg class="chart slice-auc".*?</svg>', dom, re.S)
    assert auc_chart
    # Each slice row has both versions' AUC as bars.
    first_row = re.search(r'class="bar-row".*?</g>', auc_chart.group(0), re.S)
    assert first_row
    assert re.findall(r'class="bar" data-series="([^"]+)"', first_row.group(0)) == ["v1", "v2"]
    v1_auc = registry.evaluation(MODEL, 1)["overall"]["auc"]
    v2_auc = registry.evaluation(MODEL, 2)["overall"]["auc"]
    assert f"{round(v1_auc, 4)}" in text and f"{round(v2_auc, 4)}" in text
    assert "None" not in text
    png = screenshot(page, tmp_path / "compare.png", size="1280,1600")
    assert png.read_bytes()[:8] == PNG_MAGIC
