"""The report's plots as inline SVG text: histogram, bars, lines, heatmap, scatter, reliability diagram.

Small on purpose (a few KB each, whatever the run's size: the callers pass binned or sampled data) and with no
dependency beyond numpy, so the report renders offline and a run never needs a plotting library.
"""

from __future__ import annotations

from html import escape

import numpy as np

PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]
W, H = 520, 300
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 44


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.0f}"
    return f"{v:.2g}" if abs(v) < 0.1 else f"{v:.2f}".rstrip("0").rstrip(".")


class _Axes:
    """A plot area mapping data coordinates to pixels, with ticks and labels."""

    def __init__(self, x: tuple[float, float], y: tuple[float, float], xlabel: str, ylabel: str, title: str) -> None:
        self.x0, self.x1 = x if x[1] > x[0] else (x[0], x[0] + 1)
        self.y0, self.y1 = y if y[1] > y[0] else (y[0], y[0] + 1)
        self.parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
            f'aria-label="{escape(title)}" font-family="sans-serif" font-size="11">',
            f"<title>{escape(title)}</title>",
        ]
        for i in range(5):
            fy = self.y0 + (self.y1 - self.y0) * i / 4
            py = self.py(fy)
            self.parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{py:.1f}" y2="{py:.1f}" stroke="#e5e5e5"/>')
            self.parts.append(f'<text x="{LEFT - 4}" y="{py + 4:.1f}" text-anchor="end">{_fmt(fy)}</text>')
            fx = self.x0 + (self.x1 - self.x0) * i / 4
            self.parts.append(
                f'<text x="{self.px(fx):.1f}" y="{H - BOTTOM + 14}" text-anchor="middle">{_fmt(fx)}</text>'
            )
        self.parts.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{H - BOTTOM}" y2="{H - BOTTOM}" stroke="#333"/>'
            f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 8}" text-anchor="middle">{escape(xlabel)}</text>'
            f'<text transform="translate(12,{(TOP + H - BOTTOM) / 2}) rotate(-90)" text-anchor="middle">'
            f"{escape(ylabel)}</text>"
        )

    def px(self, x: float) -> float:
        return LEFT + (x - self.x0) / (self.x1 - self.x0) * (W - LEFT - RIGHT)

    def py(self, y: float) -> float:
        return H - BOTTOM - (y - self.y0) / (self.y1 - self.y0) * (H - TOP - BOTTOM)

    def done(self) -> str:
        return "".join([*self.parts, "</svg>"])


def histogram(counts: np.ndarray, edges: np.ndarray, xlabel: str, title: str, color: str = PALETTE[0]) -> str:
    ax = _Axes((float(edges[0]), float(edges[-1])), (0, float(max(counts.max(initial=0), 1))), xlabel, "inputs", title)
    for c, a, b in zip(counts.tolist(), edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        x, y = ax.px(a), ax.py(c)
        ax.parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(ax.px(b) - x - 1, 1):.1f}" height="{ax.py(0) - y:.1f}" '
            f'fill="{color}"><title>{_fmt(a)}-{_fmt(b)}: {c}</title></rect>'
        )
    return ax.done()


def reliability(accuracy: np.ndarray, confidence: np.ndarray, count: np.ndarray, edges: np.ndarray, title: str) -> str:
    ax = _Axes((0, 1), (0, 1), "confidence (top-1 score)", "accuracy", title)
    ax.parts.append(
        f'<line x1="{ax.px(0)}" y1="{ax.py(0)}" x2="{ax.px(1)}" y2="{ax.py(1)}" stroke="#999" stroke-dasharray="4"/>'
    )
    n_bins = len(edges) - 1
    for i in range(n_bins):
        if count[i] == 0:
            continue
        x, y = ax.px(float(edges[i])), ax.py(float(accuracy[i]))
        width = ax.px(float(edges[i + 1])) - x - 1
        ax.parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{ax.py(0) - y:.1f}" fill="{PALETTE[0]}" '
            f'opacity="0.8"><title>{_fmt(float(edges[i]))}-{_fmt(float(edges[i + 1]))}: accuracy '
            f"{accuracy[i]:.3f}, mean confidence {confidence[i]:.3f}, {int(count[i])} inputs</title></rect>"
        )
        cy = ax.py(float(confidence[i]))
        ax.parts.append(f'<line x1="{x:.1f}" x2="{x + width:.1f}" y1="{cy:.1f}" y2="{cy:.1f}" stroke="{PALETTE[2]}"/>')
    return ax.done()


def lines(series: list[tuple[str, np.ndarray, np.ndarray]], xlabel: str, ylabel: str, title: str) -> str:
    xs = [s[1] for s in series if len(s[1])]
    ys = [s[2] for s in series if len(s[2])]
    x_max = max((float(x.max()) for x in xs), default=1.0)
    y_max = max((float(y.max()) for y in ys), default=1.0)
    ax = _Axes((0, x_max), (0, y_max * 1.05), xlabel, ylabel, title)
    for i, (name, x, y) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        points = " ".join(f"{ax.px(a):.1f},{ax.py(b):.1f}" for a, b in zip(x.tolist(), y.tolist(), strict=True))
        ax.parts.append(
            f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.5"><title>{escape(name)}'
            "</title></polyline>"
        )
        ax.parts.append(
            f'<text x="{W - RIGHT - 4}" y="{TOP + 12 + 13 * i}" text-anchor="end" fill="{color}">{escape(name)}</text>'
        )
    return ax.done()


def bars(names: list[str], values: list[float], title: str, value_label: str = "inputs") -> str:
    """Horizontal bars, one per name, top to bottom."""
    row = 16
    width, left = W, 150
    height = TOP + row * len(names) + 28
    top = max(values, default=1) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}" font-family="sans-serif" font-size="11"><title>{escape(title)}</title>'
    ]
    for i, (name, value) in enumerate(zip(names, values, strict=True)):
        y = TOP + i * row
        length = (width - left - 70) * value / top
        parts.append(
            f'<text x="{left - 6}" y="{y + 11}" text-anchor="end">{escape(name[:24])}</text>'
            f'<rect x="{left}" y="{y + 2}" width="{max(length, 0.5):.1f}" height="{row - 4}" fill="{PALETTE[0]}">'
            f"<title>{escape(name)}: {_fmt(value)}</title></rect>"
            f'<text x="{left + length + 4:.1f}" y="{y + 11}">{_fmt(value)}</text>'
        )
    parts.append(f'<text x="{left}" y="{height - 8}">{escape(value_label)}</text></svg>')
    return "".join(parts)


def heatmap(matrix: np.ndarray, names: list[str], title: str) -> str:
    """A normalised confusion matrix: true class by row, predicted by column, the share in each cell."""
    n = len(names)
    cell = max(14, min(48, 420 // max(n, 1)))
    left, top = 110, 90
    size_w, size_h = left + cell * n + 10, top + cell * n + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size_w} {size_h}" width="{size_w}" height="{size_h}" '
        f'role="img" aria-label="{escape(title)}" font-family="sans-serif" font-size="11"><title>{escape(title)}</title>'
        f'<text x="{left + cell * n / 2}" y="12" text-anchor="middle">predicted</text>'
        f'<text transform="translate(12,{top + cell * n / 2}) rotate(-90)" text-anchor="middle">true</text>'
    ]
    for j, name in enumerate(names):
        x = left + j * cell + cell / 2
        parts.append(f'<text transform="translate({x:.1f},{top - 6}) rotate(-45)">{escape(name[:14])}</text>')
        parts.append(
            f'<text x="{left - 6}" y="{top + j * cell + cell / 2 + 4:.1f}" text-anchor="end">{escape(name[:16])}</text>'
        )
    for i in range(n):
        for j in range(n):
            v = float(matrix[i, j])
            shade = int(255 - 200 * v)
            fill = f"rgb({shade},{shade + (255 - shade) // 4},255)"
            parts.append(
                f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell - 1}" height="{cell - 1}" fill="{fill}">'
                f"<title>true {escape(names[i])}, predicted {escape(names[j])}: {v:.3f}</title></rect>"
            )
            if cell >= 30:
                color = "#fff" if v > 0.6 else "#222"
                parts.append(
                    f'<text x="{left + j * cell + cell / 2 - 0.5}" y="{top + i * cell + cell / 2 + 3.5}" '
                    f'text-anchor="middle" fill="{color}">{v:.2f}</text>'
                )
    parts.append("</svg>")
    return "".join(parts)


def scatter(points: np.ndarray, groups: list[str] | None, title: str) -> str:
    """2-D points, coloured by group (the first ten groups by size get colours, the rest are grey)."""
    if not len(points):
        points = np.zeros((0, 2))
    x_lo, x_hi = (float(points[:, 0].min()), float(points[:, 0].max())) if len(points) else (0.0, 1.0)
    y_lo, y_hi = (float(points[:, 1].min()), float(points[:, 1].max())) if len(points) else (0.0, 1.0)
    ax = _Axes((x_lo, x_hi), (y_lo, y_hi), "component 1", "component 2", title)
    colors: dict[str, str] = {}
    if groups is not None:
        names, counts = np.unique(np.asarray(groups), return_counts=True)
        for k, name in enumerate(names[np.argsort(-counts, kind="stable")][: len(PALETTE)]):
            colors[str(name)] = PALETTE[k]
    for i, (a, b) in enumerate(points.tolist()):
        color = colors.get(groups[i], "#bbb") if groups is not None else PALETTE[0]
        ax.parts.append(f'<circle cx="{ax.px(a):.1f}" cy="{ax.py(b):.1f}" r="2" fill="{color}" opacity="0.7"/>')
    for k, (name, color) in enumerate(colors.items()):
        ax.parts.append(
            f'<text x="{W - RIGHT - 4}" y="{TOP + 12 + 13 * k}" text-anchor="end" fill="{color}">{escape(name[:20])}</text>'
        )
    return ax.done()
