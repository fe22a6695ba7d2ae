"""Local run report: one self-contained HTML page per pipeline run.

Shows what the Kubeflow UI shows for a cluster run: the DAG's steps with status and duration,
and each step's artifacts: HTML views (statistics, evaluation report) inline, Markdown reports,
scalar metrics, the ROC curve and confusion matrix of ``ClassificationMetrics``, and the
per-slice table of the evaluation.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops.artifacts import EXECUTOR_OUTPUT_FILE


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


def slice_table(evaluation: dict[str, Any]) -> str:
    """The per-slice table of an evaluation/blessing JSON, as HTML."""
    slices = evaluation.get("slices") or []
    if not slices:
        return ""
    keys = [k for k in slices[0] if not isinstance(slices[0][k], dict | list)]
    head = "".join(f"<th>{_esc(k)}</th>" for k in keys)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{_esc(round(s.get(k), 4) if isinstance(s.get(k), float) else s.get(k))}</td>"
            for k in keys
        )
        + "</tr>"
        for s in slices
    )
    return f'<table id="slices" class="slices"><tr>{head}</tr>{body}</table>'


STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 8px;
font-size:13px;text-align:left}.SUCCESS{color:#2e7d32}.FAILURE{color:#c62828}
.NOT{color:#888}.step{border:1px solid #ccc;border-radius:6px;margin:12px 0;padding:8px 12px}
iframe.view{width:100%;height:420px;border:1px solid #eee}.uri{color:#888;font-size:11px}
.decision{font-size:16px;padding:8px;background:#f5f5f5;border-left:4px solid #1565c0}
"""


def build_report(
    run_name: str,
    steps: list[StepRecord],
    summary: dict[str, Any],
    out_path: Path,
    evaluation: dict[str, Any] | None = None,
) -> Path:
    """Write the run's HTML report and return its path."""
    rows = "".join(
        f'<tr><td>{_esc(s.name)}</td><td class="{_esc(s.status.split()[0])}">{_esc(s.status)}'
        f"</td><td>{'' if s.seconds is None else f'{s.seconds:.1f} s'}</td></tr>"
        for s in steps
    )
    decisions = "".join(f"<li><b>{_esc(k)}</b>: {_esc(v)}</li>" for k, v in summary.items())
    sections = "".join(
        f'<section class="step" id="step-{_esc(s.name)}"><h3>{_esc(s.name)} '
        f'<small class="{_esc(s.status.split()[0])}">{_esc(s.status)}</small></h3>'
        + "".join(_artifact_html(n, o) for n, o in s.outputs.items())
        + "</section>"
        for s in steps
    )
    slices = slice_table(evaluation or {})
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Run {_esc(run_name)}</title>"
        f"<style>{STYLE}</style></head><body><h1>Pipeline run {_esc(run_name)}</h1>"
        f'<div class="decision"><ul>{decisions}</ul></div>'
        f'<h2>Steps</h2><table id="steps"><tr><th>step</th><th>status</th><th>duration</th></tr>'
        f"{rows}</table>"
        + (f"<h2>Evaluation per slice</h2>{slices}" if slices else "")
        + f"<h2>Artifacts</h2>{sections}</body></html>"
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(page)
    return out_path
