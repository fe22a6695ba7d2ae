"""Local run report: one self-contained HTML page per pipeline run.

Shows what the Kubeflow UI shows for a cluster run: the DAG's steps with status and duration,
and each step's artifacts: HTML views (statistics, evaluation report) inline, Markdown reports,
scalar metrics, the ROC curve and confusion matrix of ``ClassificationMetrics``, and the
per-slice table of the evaluation.
"""

from __future__ import annotations

import argparse
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops.artifacts import EXECUTOR_OUTPUT_FILE, VERDICT_FILE
from mlops.report_charts import (
    PALETTE,
    BarRow,
    DagNode,
    Series,
    bar_chart_svg,
    dag_svg,
    line_chart_svg,
    pr_points,
    timeline_svg,
)

# The compiled IR the DAG is drawn from (its tasks and dependentTasks), next to the package.
COMPILED_PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "training_pipeline.yaml"


@dataclass
class StepRecord:
    """One task of a local run as observed by the runner."""

    name: str
    status: str = "NOT RUN"
    started: float | None = None
    finished: float | None = None
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float | None:
        """Wall time of the step, if it ran."""
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started


def read_task_outputs(task_dir: Path) -> dict[str, Any]:
    """The artifacts and parameters a kfp.local task wrote (its executor_output.json)."""
    path = task_dir / EXECUTOR_OUTPUT_FILE
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text())
    outputs: dict[str, Any] = {}
    for name, entry in raw.get("artifacts", {}).items():
        art = entry["artifacts"][0]
        outputs[name] = {
            "uri": art.get("uri", ""),
            "metadata": art.get("metadata", {}),
            "path": str(task_dir / name),
        }
    for name, value in raw.get("parameterValues", {}).items():
        outputs[name] = {"value": value}
    return outputs


def _esc(value: object) -> str:
    return html.escape(str(value))


def _roc_svg(points: list[dict[str, float]], width: int = 260, height: int = 220) -> str:
    pts = sorted((p.get("falsePositiveRate", 0.0), p.get("recall", 0.0)) for p in points)
    path = " ".join(
        f"{10 + x * (width - 20):.1f},{height - 10 - y * (height - 20):.1f}" for x, y in pts
    )
    return (
        f'<svg class="roc" width="{width}" height="{height}" role="img" aria-label="ROC curve">'
        f'<rect x="10" y="10" width="{width - 20}" height="{height - 20}" fill="none" '
        f'stroke="#999"/><line x1="10" y1="{height - 10}" x2="{width - 10}" y2="10" '
        f'stroke="#ccc" stroke-dasharray="4"/><polyline fill="none" stroke="#1565c0" '
        f'stroke-width="2" points="{path}"/></svg>'
    )


def _confusion_table(matrix: dict[str, Any]) -> str:
    cats = [c.get("displayName", "") for c in matrix.get("annotationSpecs", [])]
    rows = matrix.get("rows", [])
    head = "".join(f"<th>pred {_esc(c)}</th>" for c in cats)
    body = "".join(
        f"<tr><th>true {_esc(c)}</th>"
        + "".join(f"<td>{_esc(v)}</td>" for v in row.get("row", []))
        + "</tr>"
        for c, row in zip(cats, rows, strict=False)
    )
    return f'<table class="confusion"><tr><th></th>{head}</tr>{body}</table>'


def _artifact_html(name: str, out: dict[str, Any]) -> str:
    if "value" in out:
        value = out["value"]
        text = json.dumps(value, indent=2) if not isinstance(value, str) else value
        return f"<details><summary>{_esc(name)}</summary><pre>{_esc(text)}</pre></details>"
    meta = out.get("metadata", {})
    path = Path(out.get("path", ""))
    parts = [f'<div class="artifact"><h4>{_esc(name)}</h4>']
    if "confidenceMetrics" in meta:
        parts.append(_roc_svg(meta["confidenceMetrics"]))
    if "confusionMatrix" in meta:
        parts.append(_confusion_table(meta["confusionMatrix"]))
    scalars = {
        k: v for k, v in meta.items()
        if isinstance(v, int | float | str | bool) and k not in ("display_name",)
    }  # fmt: skip
    if scalars:
        rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in scalars.items())
        parts.append(f'<table class="meta">{rows}</table>')
    if path.is_file() and path.suffix in ("", ".html", ".md") and path.stat().st_size < 5_000_000:
        text = path.read_text(errors="replace")
        if text.lstrip().lower().startswith(("<!doctype", "<html", "<div", "<h", "<table")):
            parts.append(f'<iframe class="view" srcdoc="{_esc(text)}"></iframe>')
        elif name.lower().endswith(("report", "markdown", "summary")) or path.suffix == ".md":
            parts.append(f'<pre class="markdown">{_esc(text)}</pre>')
    parts.append(f'<p class="uri">{_esc(out.get("uri", ""))}</p></div>')
    return "".join(parts)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return _esc(round(value, 4) if isinstance(value, float) else value)


def slice_table(evaluation: dict[str, Any]) -> str:
    """The per-slice table of an evaluation/blessing JSON, as HTML.

    Columns that hold no value in any slice (the baseline's, for a first model) are left out
    rather than printed as ``None``.
    """
    slices = evaluation.get("slices") or []
    if not slices:
        return ""
    keys = [
        k for k in slices[0]
        if not isinstance(slices[0][k], dict | list)
        and any(s.get(k) is not None for s in slices)
    ]  # fmt: skip
    head = "".join(f"<th>{_esc(k)}</th>" for k in keys)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(s.get(k))}</td>" for k in keys) + "</tr>" for s in slices
    )
    return f'<table id="slices" class="slices"><tr>{head}</tr>{body}</table>'


# Overall metrics of an evaluation JSON shown on the run report and the compare page; precision,
# recall and F1 are at each model's own operating threshold (``threshold``).
OVERALL_METRICS = (
    "count", "positives", "auc", "pr_auc", "log_loss", "calibration_error", "threshold",
    "precision", "recall", "f1", "accuracy", "positive_rate", "mean_score",
)  # fmt: skip


def _threshold_source(record: dict[str, Any] | None) -> str:
    return str((record or {}).get("source") or "")


def overall_table(evaluation: dict[str, Any]) -> str:
    """Candidate (and baseline) overall metrics of an evaluation JSON, with where each model's
    operating threshold came from."""
    overall = evaluation.get("overall") or {}
    if not overall:
        return ""
    base = evaluation.get("baseline_overall")
    cols = [("candidate", overall, evaluation.get("operating_threshold"))]
    if base:
        version = evaluation.get("baseline_version")
        cols.append((f"production v{version}" if version else "production", base,
                     evaluation.get("baseline_operating_threshold")))  # fmt: skip
    head = "".join(f"<th>{_esc(name)}</th>" for name, _, _ in cols)
    rows = "".join(
        f"<tr><th>{_esc(m)}</th>"
        + "".join(f"<td>{_cell(o.get(m))}</td>" for _, o, _ in cols)
        + "</tr>"
        for m in OVERALL_METRICS
    )
    sources = "".join(f"<td>{_esc(_threshold_source(t))}</td>" for _, _, t in cols)
    return (
        f'<table id="overall-metrics"><tr><th>metric</th>{head}</tr>{rows}'
        f"<tr><th>threshold from</th>{sources}</tr></table>"
    )


def pipeline_dependencies(compiled: Path = COMPILED_PIPELINE) -> dict[str, list[str]]:
    """Each task of the compiled pipeline's root DAG and the tasks it waits for.

    Empty when the IR is not there (an installed package without the repository); the report
    then chains the steps in run order.
    """
    if not compiled.is_file():
        return {}
    import yaml  # kfp's dependency; only the report reads YAML

    # The IR file is several YAML documents (the pipeline spec, then platform specs).
    spec = next(iter(yaml.safe_load_all(compiled.read_text())), None) or {}
    tasks = spec.get("root", {}).get("dag", {}).get("tasks", {})
    return {name: list(task.get("dependentTasks", [])) for name, task in tasks.items()}


def dag_nodes(steps: list[StepRecord], deps: dict[str, list[str]]) -> list[DagNode]:
    """The steps as DAG nodes: dependencies from the IR, or run order when it lacks a step."""
    nodes = []
    for i, s in enumerate(steps):
        after = deps.get(s.name)
        if after is None:
            after = [steps[i - 1].name] if i else []
        nodes.append(DagNode(s.name, s.status, s.seconds, tuple(after)))
    return nodes


def _curve(points: list[dict[str, Any]] | None, x: str, y: str) -> list[tuple[float, float]]:
    return [
        (float(p[x]), float(p[y]))
        for p in points or []
        if p.get(x) is not None and p.get(y) is not None
    ]


def _roc(roc: dict[str, list[float]] | None) -> list[tuple[float, float]]:
    if not roc:
        return []
    return list(zip(roc.get("fpr", []), roc.get("tpr", []), strict=False))


def _series_for(
    evaluation: dict[str, Any], name: str, color: str, dashed: bool, baseline: bool
) -> tuple[Series, Series, Series]:
    """ROC, PR and calibration series of the candidate (or, ``baseline``, its baseline)."""
    roc = evaluation.get("baseline_roc" if baseline else "roc")
    overall = evaluation.get("baseline_overall" if baseline else "overall") or {}
    calibration = evaluation.get("baseline_calibration" if baseline else "calibration")
    pr = pr_points(roc or {}, int(overall.get("positives") or 0), int(overall.get("count") or 0))
    return (
        Series(name, _roc(roc), color, dashed),
        Series(name, pr, color, dashed),
        Series(name, _curve(calibration, "mean_score", "positive_rate"), color, dashed, True),
    )


def _curve_section(series: list[tuple[Series, Series, Series]]) -> str:
    roc = line_chart_svg(
        "ROC", [s[0] for s in series], "false positive rate", "true positive rate", "roc", True
    )
    pr = line_chart_svg("Precision-recall", [s[1] for s in series], "recall", "precision", "pr")
    cal = line_chart_svg(
        "Calibration (10 bins)", [s[2] for s in series], "mean predicted probability",
        "observed delay rate", "calibration", True,
    )  # fmt: skip
    return f'<div class="charts">{roc}{pr}{cal}</div>'


def _evaluation_charts(evaluation: dict[str, Any]) -> str:
    """Curves of the candidate (and baseline) and per-slice AUC and log loss with the gates."""
    has_base = evaluation.get("baseline_overall") is not None
    version = evaluation.get("baseline_version")
    base_name = f"production v{version}" if version else "production"
    series = [_series_for(evaluation, "candidate", PALETTE[0], False, False)]
    if has_base:
        series.append(_series_for(evaluation, base_name, PALETTE[1], True, True))
    return _curve_section(series) + _slice_charts(
        [("candidate", evaluation)] + ([(base_name, evaluation)] if has_base else []),
        evaluation.get("config") or {},
        compare_baseline=has_base,
    )


def _slice_charts(
    sources: list[tuple[str, dict[str, Any]]],
    config: dict[str, Any],
    compare_baseline: bool,
    colors: tuple[str, ...] = PALETTE,
) -> str:
    """Per-slice AUC and log loss bars, one series per source, the gate marked per slice.

    On a run report the sources are the candidate and (``compare_baseline``) the baseline read
    from the same evaluation; the AUC gate of a slice is then the baseline's AUC minus the
    slice's allowed drop and the log-loss gate the baseline's log loss plus the allowed
    increase. A first model is gated overall only, so its chart marks the absolute minimum
    AUC and maximum log loss instead.
    """
    first = sources[0][1]
    slices = first.get("slices") or []
    if not slices:
        return ""
    others = {name: {s["slice"]: s for s in ev.get("slices") or []} for name, ev in sources[1:]}
    min_count = int(config.get("min_slice_count") or 0)
    auc_rows, ll_rows = [], []
    for s in slices:
        label = f"{s['slice']} (n={s['count']})"
        auc_vals: list[float | None] = [s.get("auc")]
        ll_vals: list[float | None] = [s.get("log_loss")]
        for name, _ in sources[1:]:
            if compare_baseline:
                auc_vals.append(s.get("baseline_auc"))
                ll_vals.append((s.get("baseline") or {}).get("log_loss"))
            else:
                other = others[name].get(s["slice"], {})
                auc_vals.append(other.get("auc"))
                ll_vals.append(other.get("log_loss"))
        if compare_baseline and s.get("baseline_auc") is not None:
            auc_limit = s["baseline_auc"] - float(s.get("max_auc_drop") or 0.0)
            base_ll = (s.get("baseline") or {}).get("log_loss")
            ll_limit = (
                None
                if base_ll is None
                else base_ll + float(config.get("max_slice_log_loss_increase") or 0.0)
            )
        else:
            auc_limit, ll_limit = config.get("min_auc"), config.get("max_log_loss")
        regs = " ".join(s.get("regressions") or [])
        muted = not s.get("gating") or s.get("count", 0) < min_count
        auc_rows.append(BarRow(label, auc_vals, auc_limit, "AUC" in regs, muted))
        ll_rows.append(BarRow(label, ll_vals, ll_limit, "log loss" in regs, muted))
    names = [name for name, _ in sources]
    if compare_baseline:
        auc_gate, ll_gate = "baseline - allowed drop", "baseline + allowed increase"
    elif len(sources) == 1:
        auc_gate, ll_gate = "min AUC (first model, overall)", "max log loss (first model)"
    else:
        auc_gate, ll_gate = "min AUC", "max log loss"
    auc = bar_chart_svg("AUC per slice", auc_rows, names, "slice-auc", auc_gate, colors=colors)
    ll = bar_chart_svg(
        "Log loss per slice", ll_rows, names, "slice-logloss", ll_gate, colors=colors
    )
    return f'<div class="charts">{auc}{ll}</div>'


def read_verdict(steps: list[StepRecord]) -> dict[str, Any] | None:
    """The validate step's verdict JSON (drift and skew per feature), if the step wrote one."""
    for s in steps:
        if s.name != "validate-op":
            continue
        path = Path(s.outputs.get("verdict", {}).get("path", ""))
        if path.is_dir():  # validate writes the artifact as a folder holding verdict.json
            path = path / VERDICT_FILE
        if path.is_file():
            try:
                raw = json.loads(path.read_text())
            except ValueError:  # a half-written file of a killed step: no chart, not a crash
                return None
            return raw if isinstance(raw, dict) else None
    return None


def _short_path(path: str) -> str:
    """The last two parts of a statistics path or URI: enough to tell which version it is."""
    return "/".join(str(path).rstrip("/").split("/")[-2:])


def drift_charts(verdict: dict[str, Any]) -> str:
    """Drift and skew per feature, ranked by value / threshold, the threshold at 1.0."""
    parts = []
    for title, kind, values_key, limits_key in (
        ("Drift vs " + _short_path(verdict.get("baseline") or "baseline"), "drift", "drift",
         "drift_thresholds"),
        ("Training-serving skew", "skew", "skew", "skew_thresholds"),
    ):  # fmt: skip
        values: dict[str, float] = verdict.get(values_key) or {}
        limits: dict[str, float] = verdict.get(limits_key) or {}
        if not values:
            continue

        def ratio(name: str, values: dict[str, float] = values, limits: dict = limits) -> float:
            limit = limits.get(name) or 0.0
            return values[name] / limit if limit else 0.0

        ranked = sorted(values, key=ratio, reverse=True)
        rows = [
            BarRow(
                f"{n} ({values[n]:.4f} / {limits.get(n, 0.0):.4f})",
                [ratio(n)],
                1.0,
                flagged=ratio(n) > 1.0,
            )
            for n in ranked
        ]
        parts.append(
            bar_chart_svg(
                f"{title}: value / threshold, ranked",
                rows,
                ["value / threshold"],
                kind,
                "threshold",
                colors=("#ef6c00",),
            )
        )
    return f'<div class="charts">{"".join(parts)}</div>' if parts else ""


STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 8px;
font-size:13px;text-align:left}.SUCCESS{color:#2e7d32}.FAILURE{color:#c62828}
.NOT{color:#888}.step{border:1px solid #ccc;border-radius:6px;margin:12px 0;padding:8px 12px}
iframe.view{width:100%;height:420px;border:1px solid #eee}.uri{color:#888;font-size:11px}
.decision{font-size:16px;padding:8px;background:#f5f5f5;border-left:4px solid #1565c0}
.charts{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start;margin:8px 0}
svg.chart{background:#fff;border:1px solid #eee;border-radius:4px}
.decision pre{margin:2px 0 2px 12px;white-space:pre-wrap;font-size:13px}
"""


def _decision_item(key: str, value: Any) -> str:
    text = str(value)
    if "\n" in text:
        return f"<li><b>{_esc(key)}</b>:<pre>{_esc(text)}</pre></li>"
    return f"<li><b>{_esc(key)}</b>: {_esc(text)}</li>"


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def build_report(
    run_name: str,
    steps: list[StepRecord],
    summary: dict[str, Any],
    out_path: Path,
    evaluation: dict[str, Any] | None = None,
    dependencies: dict[str, list[str]] | None = None,
) -> Path:
    """Write the run's HTML report and return its path.

    Args:
        run_name: The run's name, the page title.
        steps: The DAG's steps in run order, with status, times and outputs.
        summary: The run's decisions (validation, blessing, push, deploy); ``None`` values are
            not shown.
        out_path: Where to write the page.
        evaluation: The evaluation JSON (``Evaluation.to_dict()``), if evaluate ran.
        dependencies: Each task's upstream tasks; defaults to the compiled pipeline's.
    """
    deps = pipeline_dependencies() if dependencies is None else dependencies
    rows = "".join(
        f'<tr><td>{_esc(s.name)}</td><td class="{_esc(s.status.split()[0])}">{_esc(s.status)}'
        f"</td><td>{'' if s.seconds is None else f'{s.seconds:.1f} s'}</td></tr>"
        for s in steps
    )
    decisions = "".join(_decision_item(k, v) for k, v in summary.items() if v is not None)
    sections = "".join(
        f'<section class="step" id="step-{_esc(s.name)}"><h3>{_esc(s.name)} '
        f'<small class="{_esc(s.status.split()[0])}">{_esc(s.status)}</small></h3>'
        + "".join(_artifact_html(n, o) for n, o in s.outputs.items())
        + "</section>"
        for s in steps
    )
    evaluation = evaluation or {}
    slices = slice_table(evaluation)
    verdict = read_verdict(steps)
    drift = drift_charts(verdict) if verdict else ""
    timeline = timeline_svg([(s.name, s.status, s.started, s.finished) for s in steps])
    body = (
        f"<h1>Pipeline run {_esc(run_name)}</h1>"
        f'<div class="decision"><ul>{decisions}</ul></div>'
        f'<h2>Pipeline</h2><div class="charts" id="dag">{dag_svg(dag_nodes(steps, deps))}</div>'
        + (f'<h2>Timeline</h2><div class="charts" id="timeline">{timeline}</div>' if timeline
           else "")
        + f'<h2>Steps</h2><table id="steps"><tr><th>step</th><th>status</th><th>duration</th>'
        f"</tr>{rows}</table>"
        + (f'<h2>Evaluation</h2><div id="evaluation">{overall_table(evaluation)}'
           f"{_evaluation_charts(evaluation)}</div>"
           f"<h3>Per slice</h3>{slices}" if slices else "")
        + (f'<h2>Data drift and skew</h2><div id="drift">{drift}</div>' if drift else "")
        + f"<h2>Artifacts</h2>{sections}"
    )  # fmt: skip
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(_page(f"Run {run_name}", body))
    return out_path


def _overall_table(versions: list[tuple[str, dict[str, Any]]]) -> str:
    names = OVERALL_METRICS
    head = "".join(f"<th>{_esc(n)}</th>" for n, _ in versions) + "<th>change</th>"
    rows = []
    for m in names:
        values = [(ev.get("overall") or {}).get(m) for _, ev in versions]
        first, last = values[0], values[-1]
        change = last - first if first is not None and last is not None else None
        rows.append(
            f"<tr><th>{_esc(m)}</th>"
            + "".join(f"<td>{_cell(v)}</td>" for v in values)
            + f"<td>{'' if change is None else f'{change:+.4g}'}</td></tr>"
        )
    blessed = "".join(f"<td>{'yes' if ev.get('blessed') else 'no'}</td>" for _, ev in versions)
    return (
        f'<table id="overall"><tr><th>metric</th>{head}</tr>{"".join(rows)}'
        f"<tr><th>blessed</th>{blessed}<td></td></tr></table>"
    )


def build_compare(
    model_name: str,
    a: tuple[int, dict[str, Any]],
    b: tuple[int, dict[str, Any]],
    out_path: Path,
) -> Path:
    """Write a page comparing two registry versions' evaluations, as the run report does.

    Both evaluations were measured on their own eval data at registration; the page says so,
    since the curves are comparable only when the eval spans match.

    Args:
        model_name: The registered model.
        a: ``(version, evaluation.json)`` of the first version.
        b: ``(version, evaluation.json)`` of the second version.
        out_path: Where to write the page.
    """
    (va, ea), (vb, eb) = a, b
    name_a, name_b = f"v{va}", f"v{vb}"
    series = [
        _series_for(ea, name_a, PALETTE[0], False, False),
        _series_for(eb, name_b, PALETTE[2], False, False),
    ]
    slices = _slice_charts(
        [(name_a, ea), (name_b, eb)], ea.get("config") or {}, False, (PALETTE[0], PALETTE[2])
    )
    body = (
        f"<h1>{_esc(model_name)}: version {va} vs version {vb}</h1>"
        "<p>Each version's evaluation as stored in the registry (its own eval split and "
        "thresholds).</p>"
        f"<h2>Overall</h2>{_overall_table([(name_a, ea), (name_b, eb)])}"
        f'<h2>Curves</h2><div id="evaluation">{_curve_section(series)}</div>'
        f"<h2>Per slice</h2>{slices}"
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(_page(f"{model_name} v{va} vs v{vb}", body))
    return out_path


def compare_versions(registry_uri: str, model_name: str, a: int, b: int, out_path: Path) -> Path:
    """Render :func:`build_compare` for two versions read from the registry."""
    from mlops.registry import ModelRegistry

    registry = ModelRegistry(registry_uri)
    return build_compare(
        model_name,
        (a, registry.evaluation(model_name, a)),
        (b, registry.evaluation(model_name, b)),
        out_path,
    )


def add_compare_parser(models_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``models compare A B`` to the ``models`` sub-commands and return its parser.

    ``--registry`` and ``--model-name`` belong to the ``models`` parser and are read from there.
    """
    p: argparse.ArgumentParser = models_subparsers.add_parser(
        "compare", help="compare two registry versions' evaluations in an HTML page"
    )
    p.add_argument("a", type=int, help="first version")
    p.add_argument("b", type=int, help="second version")
    p.add_argument("--out", type=Path, default=None, help="default: runs/compare-vA-vB.html")
    return p


def cli_compare(args: argparse.Namespace, registry_uri: str) -> int:
    """Handler of ``models compare``: write the page and print its path.

    Args:
        args: Parsed ``models [--registry R] [--model-name M] compare A B [--out P]``.
        registry_uri: The config's registry, used when ``--registry`` is not given.
    """
    out = args.out or Path("runs") / f"compare-v{args.a}-v{args.b}.html"
    registry = getattr(args, "registry", None) or registry_uri
    path = compare_versions(registry, args.model_name, args.a, args.b, out)
    print(path)
    return 0
