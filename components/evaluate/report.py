"""Self-contained HTML report of an evaluation: blessing, reasons, tables and inline SVG plots.

No JavaScript and no external assets, so the KFP UI (and a browser opened on the file) shows it
as is.
"""

from __future__ import annotations

import math
from html import escape
from itertools import groupby

from components.evaluate.core import Evaluation, SliceResult
from components.evaluate.metrics import BinaryMetrics

CANDIDATE_COLOR = "#1f77b4"
BASELINE_COLOR = "#a0a0a0"
REGRESSED_COLOR = "#d62728"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
th { background: #f3f3f3; }
td.l, th.l { text-align: left; }
.blessed { color: #2ca02c; } .rejected { color: #d62728; }
tr.regressed td { background: #fde0e0; } tr.small td { color: #888; }
.plots { display: flex; flex-wrap: wrap; gap: 1.5em; }
"""


def _num(v: float | None, digits: int = 4) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _metrics_table(cand: BinaryMetrics, base: BinaryMetrics | None) -> str:
    names = (
        "count", "positives", "auc", "pr_auc", "log_loss", "calibration_error", "threshold",
        "precision", "recall", "f1", "accuracy", "positive_rate", "predicted_positive_rate",
        "mean_score",
    )  # fmt: skip
    head = "<tr><th class=l>metric</th><th>candidate</th>" + (
        "<th>baseline</th><th>change</th></tr>" if base else "</tr>"
    )
    rows = []
    for n in names:
        digits = 0 if n in ("count", "positives") else 4
        c = float(getattr(cand, n))
        cells = f"<td class=l>{n}</td><td>{_num(c, digits)}</td>"
        if base is not None:
            b = float(getattr(base, n))
            change = c - b if math.isfinite(c) and math.isfinite(b) else float("nan")
            cells += f"<td>{_num(b, digits)}</td><td>{_num(change, digits)}</td>"
        rows.append(f"<tr>{cells}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _slice_table(slices: list[SliceResult], min_count: int) -> str:
    head = (
        "<tr><th class=l>slice</th><th>n</th><th>positive rate</th><th>AUC</th>"
        "<th>baseline AUC</th><th>change</th><th>allowed drop</th><th>log loss</th>"
        "<th>log loss change</th><th>PR-AUC</th>"
        "<th>accuracy</th><th>precision</th><th>recall</th><th>F1</th><th>ECE</th>"
        "<th class=l>status</th></tr>"
    )
    rows = []
    for s in slices:
        c = s.candidate
        status = (
            "; ".join(s.regressions) if s.regressed else ("gating" if s.gating else "not gating")
        )
        if s.count < min_count:
            status = f"not gating (n < {min_count})"
        cls = "regressed" if s.regressed else ("small" if not s.gating else "")
        rows.append(
            f"<tr class='{cls}'><td class=l>{escape(s.name)}</td><td>{s.count}</td>"
            f"<td>{_num(c.positive_rate, 3)}</td><td>{_num(c.auc)}</td>"
            f"<td>{_num(s.baseline.auc if s.baseline else None)}</td>"
            f"<td>{_num(s.auc_delta)}</td><td>{_num(s.max_auc_drop, 3)}</td>"
            f"<td>{_num(c.log_loss)}</td><td>{_num(s.log_loss_delta)}</td>"
            f"<td>{_num(c.pr_auc)}</td><td>{_num(c.accuracy, 3)}</td>"
            f"<td>{_num(c.precision, 3)}</td><td>{_num(c.recall, 3)}</td>"
            f"<td>{_num(c.f1, 3)}</td>"
            f"<td>{_num(c.calibration_error, 3)}</td><td class=l>{escape(status)}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def slice_auc_svg(slices: list[SliceResult]) -> str:
    """Horizontal bars of AUC per slice, candidate over baseline; regressed slices in red."""
    bar, gap, label_w, plot_w = 9, 8, 170, 360
    rows = len(slices)
    groups = len({s.key for s in slices})
    height = rows * (2 * bar + gap) + groups * 22 + 60
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 60}" '
             f'height="{height}" font-size="11">']  # fmt: skip
    y = 10
    for key, group in groupby(slices, key=lambda s: s.key):
        parts.append(f'<text x="0" y="{y + 12}" font-weight="bold">{escape(key)}</text>')
        y += 22
        for s in group:
            color = REGRESSED_COLOR if s.regressed else CANDIDATE_COLOR
            opacity = "1" if s.gating else "0.4"
            parts.append(
                f'<text x="{label_w - 6}" y="{y + bar + 3}" text-anchor="end">'
                f"{escape(s.value)} (n={s.count})</text>"
            )
            if not math.isfinite(s.candidate.auc):
                parts.append(
                    f'<text x="{label_w + 4}" y="{y + bar + 3}" fill="#888">AUC undefined '
                    f"(one class)</text>"
                )
            for i, (value, fill) in enumerate(
                ((s.candidate.auc, color), (s.baseline.auc if s.baseline else None,
                                            BASELINE_COLOR))
            ):  # fmt: skip
                if value is None or not math.isfinite(value):
                    continue
                parts.append(
                    f'<rect x="{label_w}" y="{y + i * bar}" width="{value * plot_w:.1f}" '
                    f'height="{bar - 1}" fill="{fill}" fill-opacity="{opacity}">'
                    f"<title>{escape(s.name)} {'baseline' if i else 'candidate'} AUC "
                    f"{value:.4f}</title></rect>"
                )
            y += 2 * bar + gap
    for tick in (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
        x = label_w + tick * plot_w
        parts.append(
            f'<line x1="{x:.1f}" y1="30" x2="{x:.1f}" y2="{y}" stroke="#ddd"/>'
            f'<text x="{x:.1f}" y="{y + 14}" text-anchor="middle">{tick:.1f}</text>'
        )
    parts.append(
        f'<text x="{label_w}" y="{y + 30}">AUC: <tspan fill="{CANDIDATE_COLOR}">candidate'
        f'</tspan>, <tspan fill="{BASELINE_COLOR}">baseline</tspan>, '
        f'<tspan fill="{REGRESSED_COLOR}">regressed</tspan>; pale = not gating</text></svg>'
    )
    return "".join(parts)


def _axes(size: int, pad: int, title: str, xlabel: str, ylabel: str) -> list[str]:
    end = pad + size
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{end + 20}" height="{end + 40}" '
        f'font-size="11">',
        f'<text x="{pad}" y="14" font-weight="bold">{escape(title)}</text>',
        f'<rect x="{pad}" y="20" width="{size}" height="{size}" fill="none" stroke="#888"/>',
        f'<line x1="{pad}" y1="{20 + size}" x2="{end}" y2="20" stroke="#ccc" '
        f'stroke-dasharray="4"/>',
        f'<text x="{pad + size / 2}" y="{end + 36}" text-anchor="middle">{xlabel}</text>',
        f'<text x="12" y="{20 + size / 2}" transform="rotate(-90 12 {20 + size / 2})" '
        f'text-anchor="middle">{ylabel}</text>',
        f'<text x="{pad}" y="{end + 22}">0</text>',
        f'<text x="{end}" y="{end + 22}" text-anchor="end">1</text>',
    ]


def _points(xs: list[float], ys: list[float], size: int, pad: int) -> str:
    return " ".join(
        f"{pad + x * size:.1f},{20 + (1 - y) * size:.1f}" for x, y in zip(xs, ys, strict=True)
    )


def roc_svg(evaluation: Evaluation, size: int = 260, pad: int = 30) -> str:
    """ROC curves of candidate and baseline."""
    parts = _axes(size, pad, "ROC curve", "false positive rate", "true positive rate")
    curves = [(evaluation.baseline_roc, BASELINE_COLOR), (evaluation.roc, CANDIDATE_COLOR)]
    for roc, color in curves:
        if roc and roc["fpr"]:
            parts.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                f'points="{_points(roc["fpr"], roc["tpr"], size, pad)}"/>'
            )
    parts.append("</svg>")
    return "".join(parts)


def calibration_svg(evaluation: Evaluation, size: int = 260, pad: int = 30) -> str:
    """Observed positive rate against mean score per bin; the diagonal is perfect calibration."""
    parts = _axes(size, pad, "Calibration (10 bins)", "mean score", "observed positive rate")
    tables = [
        (evaluation.baseline_calibration, BASELINE_COLOR),
        (evaluation.calibration, CANDIDATE_COLOR),
    ]
    for table, color in tables:
        if not table:
            continue
        bins = [b for b in table if b["count"]]
        xs = [b["mean_score"] for b in bins]
        ys = [b["positive_rate"] for b in bins]
        parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="1.5" '
            f'points="{_points(xs, ys, size, pad)}"/>'
        )
        for b, x, y in zip(bins, xs, ys, strict=True):
            parts.append(
                f'<circle cx="{pad + x * size:.1f}" cy="{20 + (1 - y) * size:.1f}" r="3" '
                f'fill="{color}"><title>[{b["lower"]:.1f}, {b["upper"]:.1f}): n={b["count"]}, '
                f"score {x:.3f}, observed {y:.3f}</title></circle>"
            )
    parts.append("</svg>")
    return "".join(parts)


def render_report(evaluation: Evaluation, model_name: str = "model") -> str:
    """The whole report as one HTML string."""
    e = evaluation
    verdict = (
        "<span class=blessed>BLESSED</span>"
        if e.blessed
        else "<span class=rejected>NOT BLESSED</span>"
    )
    baseline = (
        f"baseline: production version {e.baseline_version}"
        if e.baseline_version is not None
        else "baseline: none (first model, absolute thresholds)"
    )
    reasons = "".join(f"<li>{escape(r)}</li>" for r in e.reasons)
    t, b = e.threshold, e.baseline_threshold
    thresholds = f"Operating threshold {t.value:.4f} ({t.source})" + (
        f"; baseline's {b.value:.4f} ({b.source})" if b else ""
    )
    (tn, fp), (fn, tp) = e.confusion_matrix
    regressed = ", ".join(e.regressed_slices) or "none"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Evaluation of {escape(model_name)}</title><style>{STYLE}</style></head><body>
<h1>Evaluation of {escape(model_name)}: {verdict}</h1>
<p>{escape(baseline)}. {escape(thresholds)}. Regressed slices:
<b>{escape(regressed)}</b>.</p>
<h2>Reasons</h2><ul>{reasons}</ul>
<h2>Overall</h2>{_metrics_table(e.overall, e.baseline_overall)}
<h2>Confusion matrix at {t.value:.4f}</h2>
<table><tr><th></th><th>predicted 0</th><th>predicted 1</th></tr>
<tr><th class=l>actual 0</th><td>{tn}</td><td>{fp}</td></tr>
<tr><th class=l>actual 1</th><td>{fn}</td><td>{tp}</td></tr></table>
<h2>Plots</h2><div class=plots>{slice_auc_svg(e.slices)}{roc_svg(e)}{calibration_svg(e)}</div>
<h2>Slices</h2>{_slice_table(e.slices, e.config.min_slice_count)}
</body></html>
"""
