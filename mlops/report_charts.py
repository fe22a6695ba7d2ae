"""Inline SVG charts for the run report and the model comparison page.

Pure functions from plain data to SVG text: no JavaScript, no external assets, so a page that
embeds them renders the same without network access (a laptop on a plane, a CI artifact). Each
chart carries ``class`` and ``data-*`` attributes naming what it draws, so tests assert on the
DOM rather than on pixels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape

# Kubeflow UI's state colours, roughly: green done, red failed, blue running, grey not run.
STATE_COLORS = {
    "SUCCESS": "#2e7d32",
    "FAILURE": "#c62828",
    "FAILED": "#c62828",
    "RUNNING": "#1565c0",
    "SKIPPED": "#9e9e9e",
    "NOT": "#9e9e9e",
}
PALETTE = ("#1565c0", "#9e9e9e", "#ef6c00", "#6a1b9a")
THRESHOLD_COLOR = "#c62828"
FONT = 'font-family="system-ui,sans-serif" font-size="11"'


def state_color(status: str) -> str:
    """The fill of a step in ``status`` (its first word: ``FAILURE (...)`` is a failure)."""
    word = status.split()[0].upper() if status.strip() else "NOT"
    return STATE_COLORS.get(word, "#9e9e9e")


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


@dataclass(frozen=True)
class DagNode:
    """One step of the DAG as drawn.

    Attributes:
        name: Task name, e.g. ``train-op``.
        status: ``SUCCESS``, ``FAILURE``, ``RUNNING`` or ``NOT RUN``.
        seconds: Wall time, if it ran.
        after: The tasks it depends on.
    """

    name: str
    status: str
    seconds: float | None = None
    after: tuple[str, ...] = field(default_factory=tuple)


def transitive_reduction(deps: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Drop edges implied by longer paths, so the drawn DAG shows the direct flow only.

    ``push-op`` depends on five tasks in the IR; drawing all five edges hides the shape.
    """

    def reachable(start: str) -> set[str]:
        seen: set[str] = set()
        stack = list(deps.get(start, ()))
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack.extend(deps.get(n, ()))
        return seen

    out = {}
    for node, parents in deps.items():
        implied = set().union(*(reachable(p) for p in parents)) if parents else set()
        out[node] = [p for p in parents if p not in implied]
    return out


def dag_levels(nodes: Sequence[DagNode]) -> dict[str, int]:
    """Column of each node: the length of the longest path from a root."""
    deps = {n.name: [a for a in n.after if a in {m.name for m in nodes}] for n in nodes}
    level: dict[str, int] = {}

    def depth(name: str, trail: frozenset[str]) -> int:
        if name in level:
            return level[name]
        if name in trail:  # a cycle cannot come from kfp; guard anyway rather than recurse
            return 0
        parents = deps.get(name, [])
        d = 0 if not parents else 1 + max(depth(p, trail | {name}) for p in parents)
        level[name] = d
        return d

    for n in nodes:
        depth(n.name, frozenset())
    return level


def dag_svg(nodes: Sequence[DagNode]) -> str:
    """The pipeline DAG, left to right: a box per step coloured by state, with its duration."""
    if not nodes:
        return ""
    reduced = transitive_reduction({n.name: list(n.after) for n in nodes})
    level = dag_levels(nodes)
    columns: dict[int, list[DagNode]] = {}
    for n in nodes:
        columns.setdefault(level[n.name], []).append(n)
    box_w, box_h, gap_x, gap_y, pad = 128, 44, 20, 18, 10
    rows = max(len(c) for c in columns.values())
    width = pad * 2 + len(columns) * box_w + (len(columns) - 1) * gap_x
    height = pad * 2 + rows * box_h + (rows - 1) * gap_y
    pos: dict[str, tuple[float, float]] = {}
    for col, members in sorted(columns.items()):
        top = (height - (len(members) * box_h + (len(members) - 1) * gap_y)) / 2
        for i, n in enumerate(members):
            pos[n.name] = (pad + col * (box_w + gap_x), top + i * (box_h + gap_y))
    edges = []
    for n in nodes:
        for p in reduced.get(n.name, []):
            if p not in pos:
                continue
            x1, y1 = pos[p][0] + box_w, pos[p][1] + box_h / 2
            x2, y2 = pos[n.name][0], pos[n.name][1] + box_h / 2
            mid = (x1 + x2) / 2
            edges.append(
                f'<path class="dag-edge" data-from="{_e(p)}" data-to="{_e(n.name)}" '
                f'd="M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2:.0f} {x2 - 4:.0f},'
                f'{y2:.0f}" fill="none" stroke="#90a4ae" stroke-width="1.5" '
                f'marker-end="url(#arrow)"/>'
            )
    boxes = []
    for n in nodes:
        x, y = pos[n.name]
        color = state_color(n.status)
        boxes.append(
            f'<g class="dag-node" data-step="{_e(n.name)}" data-state="{_e(n.status)}">'
            f"<title>{_e(n.name)}: {_e(n.status)} {_e(_seconds(n.seconds))}</title>"
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{box_w}" height="{box_h}" rx="6" '
            f'fill="#fff" stroke="{color}" stroke-width="2"/>'
            f'<rect x="{x:.0f}" y="{y:.0f}" width="6" height="{box_h}" rx="3" fill="{color}"/>'
            f'<text x="{x + 14:.0f}" y="{y + 18:.0f}" {FONT} font-weight="600">{_e(n.name)}'
            f'</text><text x="{x + 14:.0f}" y="{y + 34:.0f}" {FONT} fill="{color}">'
            f"{_e(n.status.split(' (')[0])}"
            + (f" · {_e(_seconds(n.seconds))}" if n.seconds is not None else "")
            + "</text></g>"
        )
    return (
        f'<svg class="chart dag" width="{width}" height="{height}" role="img" '
        f'aria-label="pipeline DAG"><defs><marker id="arrow" viewBox="0 0 10 10" refX="9" '
        f'refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" '
        f'fill="#90a4ae"/></marker></defs>{"".join(edges)}{"".join(boxes)}</svg>'
    )


def timeline_svg(
    steps: Sequence[tuple[str, str, float | None, float | None]], width: int = 760
) -> str:
    """A Gantt chart of the steps: ``(name, status, started, finished)``, epoch seconds."""
    ran = [s for s in steps if s[2] is not None]
    if not ran:
        return ""
    t0 = min(float(s[2]) for s in ran if s[2] is not None)
    t1 = max(float(s[3] if s[3] is not None else s[2]) for s in ran if s[2] is not None)
    span = max(t1 - t0, 1e-6)
    label_w, row_h, top = 130, 20, 18
    plot_w = width - label_w - 70
    height = top + row_h * len(steps) + 22
    parts = []
    for i, (name, status, started, finished) in enumerate(steps):
        y = top + i * row_h
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end" {FONT}>{_e(name)}</text>'
        )
        if started is None:
            continue
        end = finished if finished is not None else started
        x = label_w + (started - t0) / span * plot_w
        w = max((end - started) / span * plot_w, 2)
        parts.append(
            f'<rect class="timeline-bar" data-step="{_e(name)}" x="{x:.1f}" y="{y + 3}" '
            f'width="{w:.1f}" height="{row_h - 6}" fill="{state_color(status)}" rx="2">'
            f"<title>{_e(name)} {_e(_seconds(end - started))}</title></rect>"
            f'<text x="{x + w + 4:.1f}" y="{y + 14}" {FONT} fill="#555">'
            f"{_e(_seconds(end - started))}</text>"
        )
    axis_y = top + row_h * len(steps) + 4
    ticks = []
    for k in range(5):
        t = span * k / 4
        x = label_w + plot_w * k / 4
        ticks.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{axis_y}" stroke="#eee"/>'
            f'<text x="{x:.1f}" y="{axis_y + 13}" text-anchor="middle" {FONT} fill="#777">'
            f"{_e(_seconds(t))}</text>"
        )
    return (
        f'<svg class="chart timeline" width="{width}" height="{height}" role="img" '
        f'aria-label="step timeline">{"".join(ticks)}{"".join(parts)}</svg>'
    )


@dataclass(frozen=True)
class Series:
    """One line of a chart.

    Attributes:
        name: Legend text, e.g. ``candidate`` or ``v3``.
        points: ``(x, y)`` pairs in [0, 1] x [0, 1].
        color: Stroke colour.
        dashed: Draw dashed (the baseline).
        markers: Draw a dot per point (calibration bins).
    """

    name: str
    points: Sequence[tuple[float, float]]
    color: str = PALETTE[0]
    dashed: bool = False
    markers: bool = False


def line_chart_svg(
    title: str,
    series: Sequence[Series],
    x_label: str,
    y_label: str,
    kind: str,
    diagonal: bool = False,
    size: int = 280,
) -> str:
    """A unit-square line chart (ROC, precision-recall, calibration) with a legend."""
    drawn = [s for s in series if s.points]
    if not drawn:
        return ""
    left, top, plot = 42, 24, size - 60
    height = top + plot + 46 + 14 * len(drawn)

    def sx(v: float) -> float:
        return left + min(max(v, 0.0), 1.0) * plot

    def sy(v: float) -> float:
        return top + plot - min(max(v, 0.0), 1.0) * plot

    grid = []
    for k in range(6):
        v = k / 5
        grid.append(
            f'<line x1="{sx(v):.1f}" y1="{top}" x2="{sx(v):.1f}" y2="{top + plot}" '
            f'stroke="#eee"/><line x1="{left}" y1="{sy(v):.1f}" x2="{left + plot}" '
            f'y2="{sy(v):.1f}" stroke="#eee"/>'
            f'<text x="{sx(v):.1f}" y="{top + plot + 13}" text-anchor="middle" {FONT} '
            f'fill="#777">{v:.1f}</text><text x="{left - 4}" y="{sy(v) + 4:.1f}" '
            f'text-anchor="end" {FONT} fill="#777">{v:.1f}</text>'
        )
    if diagonal:
        grid.append(
            f'<line x1="{sx(0)}" y1="{sy(0)}" x2="{sx(1)}" y2="{sy(1)}" stroke="#bbb" '
            f'stroke-dasharray="4"/>'
        )
    lines = []
    legend = []
    for i, s in enumerate(drawn):
        pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s.points)
        dash = ' stroke-dasharray="6 3"' if s.dashed else ""
        lines.append(
            f'<polyline class="series" data-series="{_e(s.name)}" data-points="{len(s.points)}"'
            f' fill="none" stroke="{s.color}" stroke-width="2"{dash} points="{pts}"/>'
        )
        if s.markers:
            lines += [
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{s.color}"/>'
                for x, y in s.points
            ]
        ly = top + plot + 42 + 14 * i
        legend.append(
            f'<line x1="{left}" y1="{ly - 4}" x2="{left + 18}" y2="{ly - 4}" stroke="{s.color}" '
            f'stroke-width="2"{dash}/><text x="{left + 24}" y="{ly}" {FONT}>{_e(s.name)}</text>'
        )
    return (
        f'<svg class="chart {_e(kind)}" width="{size}" height="{height}" role="img" '
        f'aria-label="{_e(title)}"><text x="{left}" y="14" {FONT} font-weight="600">'
        f"{_e(title)}</text>{''.join(grid)}"
        f'<rect x="{left}" y="{top}" width="{plot}" height="{plot}" fill="none" stroke="#999"/>'
        f"{''.join(lines)}"
        f'<text x="{left + plot / 2}" y="{top + plot + 25}" text-anchor="middle" {FONT}>'
        f'{_e(x_label)}</text><text transform="translate(11,{top + plot / 2}) rotate(-90)" '
        f'text-anchor="middle" {FONT}>{_e(y_label)}</text>{"".join(legend)}</svg>'
    )


@dataclass(frozen=True)
class BarRow:
    """One row of a horizontal bar chart.

    Attributes:
        label: Row label, e.g. ``carrier=UA (n=3120)``.
        values: One value per series (``None`` = not measured), drawn as bars.
        limit: The row's gate, drawn as a red tick (e.g. baseline AUC minus allowed drop).
        flagged: Draw the label in red (the gate was crossed).
        muted: Draw the label grey (the row does not gate).
    """

    label: str
    values: Sequence[float | None]
    limit: float | None = None
    flagged: bool = False
    muted: bool = False


def bar_chart_svg(
    title: str,
    rows: Sequence[BarRow],
    series_names: Sequence[str],
    kind: str,
    limit_label: str = "",
    width: int = 580,
    colors: Sequence[str] = PALETTE,
) -> str:
    """Horizontal grouped bars, one group per row, with each row's gate marked in red."""
    if not rows:
        return ""
    numbers = [v for r in rows for v in (*r.values, r.limit) if v is not None and math.isfinite(v)]
    if not numbers:
        return ""
    lo = min(0.0, min(numbers))
    hi = max(numbers) * 1.08 or 1.0
    label_w, top, bar_h = 230, 36, 9
    n_series = len(series_names)
    row_h = bar_h * n_series + 8
    plot_w = width - label_w - 60
    height = top + row_h * len(rows) + 24

    def sx(v: float) -> float:
        return label_w + (v - lo) / (hi - lo) * plot_w

    parts = [f'<text x="4" y="14" {FONT} font-weight="600">{_e(title)}</text>']
    legend_x = 4
    for i, name in enumerate(series_names):
        parts.append(
            f'<rect x="{legend_x}" y="20" width="10" height="9" fill="{colors[i % len(colors)]}"/>'
            f'<text x="{legend_x + 14}" y="28" {FONT}>{_e(name)}</text>'
        )
        legend_x += 24 + 7 * len(name)
    if limit_label:
        parts.append(
            f'<line x1="{legend_x}" y1="20" x2="{legend_x}" y2="30" stroke="{THRESHOLD_COLOR}" '
            f'stroke-width="2"/><text x="{legend_x + 5}" y="28" {FONT}>{_e(limit_label)}</text>'
        )
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        parts.append(
            f'<line x1="{sx(v):.1f}" y1="{top}" x2="{sx(v):.1f}" y2="{height - 20}" '
            f'stroke="#eee"/><text x="{sx(v):.1f}" y="{height - 8}" text-anchor="middle" '
            f'{FONT} fill="#777">{v:.3g}</text>'
        )
    for i, row in enumerate(rows):
        y = top + i * row_h
        fill = THRESHOLD_COLOR if row.flagged else ("#999" if row.muted else "#222")
        parts.append(
            f'<g class="bar-row" data-label="{_e(row.label)}" data-flagged="{row.flagged!s}">'
            f'<text x="{label_w - 6}" y="{y + row_h / 2 + 3:.1f}" text-anchor="end" {FONT} '
            f'fill="{fill}">{_e(row.label)}</text>'
        )
        for j, value in enumerate(row.values):
            if value is None or not math.isfinite(value):
                continue
            v = value
            parts.append(
                f'<rect class="bar" data-series="{_e(series_names[j])}" data-value="{v:.6g}" '
                f'x="{sx(min(lo, 0.0)):.1f}" y="{y + 3 + j * bar_h}" '
                f'width="{max(sx(v) - sx(min(lo, 0.0)), 1):.1f}" height="{bar_h - 1}" '
                f'fill="{colors[j % len(colors)]}"><title>{_e(series_names[j])}: {v:.4f}'
                f"</title></rect>"
            )
        if row.limit is not None and math.isfinite(row.limit):
            parts.append(
                f'<line class="limit" data-value="{row.limit:.6g}" x1="{sx(row.limit):.1f}" '
                f'y1="{y + 1}" x2="{sx(row.limit):.1f}" y2="{y + row_h - 3}" '
                f'stroke="{THRESHOLD_COLOR}" stroke-width="2"><title>{_e(limit_label)}: '
                f"{row.limit:.4f}</title></line>"
            )
        parts.append("</g>")
    return (
        f'<svg class="chart {_e(kind)}" width="{width}" height="{height}" role="img" '
        f'aria-label="{_e(title)}">{"".join(parts)}</svg>'
    )


def pr_points(
    roc: Mapping[str, Sequence[float]], positives: int, count: int
) -> list[tuple[float, float]]:
    """Precision-recall points from ROC points and the class counts of the same rows.

    At each threshold ``tp = tpr * P`` and ``fp = fpr * N``, so precision is
    ``tp / (tp + fp)``; the (0, 0) ROC point has no predicted positive and is left out.
    """
    negatives = count - positives
    out = []
    for fpr, tpr in zip(roc.get("fpr", []), roc.get("tpr", []), strict=False):
        tp, fp = tpr * positives, fpr * negatives
        if tp + fp > 0:
            out.append((float(tpr), float(tp / (tp + fp))))
    return out
