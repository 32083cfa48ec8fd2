"""Server-rendered SVG charts of the dashboard: a step chart with markers, a line chart.

Pure functions from numbers and labels to SVG text; every label is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["Marker", "Series", "line_chart", "step_chart"]

_W, _H, _PAD = 640, 180, 36


@dataclass(frozen=True, slots=True)
class Marker:
    """A vertical line at ``at`` with a short label (pause, alarm, rollback)."""

    at: float
    label: str
    kind: str


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    points: tuple[tuple[float, float], ...]
    css: str


def _scale(lo: float, hi: float, out_lo: float, out_hi: float) -> tuple[float, float]:
    span = hi - lo or 1.0
    k = (out_hi - out_lo) / span
    return k, out_lo - lo * k


def _tick(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _frame(title: str, y_max: float, unit: str, body: list[str]) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img"'
        f' aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>"
        f'<line class="axis" x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - 8}" y2="{_H - _PAD}"/>'
        f'<line class="axis" x1="{_PAD}" y1="8" x2="{_PAD}" y2="{_H - _PAD}"/>'
        f'<text class="tick" x="2" y="16">{_tick(y_max)}{escape(unit)}</text>'
        f'<text class="tick" x="2" y="{_H - _PAD}">0</text>' + "".join(body) + "</svg>"
    )


def step_chart(
    title: str,
    points: Sequence[tuple[float, float]],
    *,
    y_max: float,
    unit: str = "",
    markers: Sequence[Marker] = (),
) -> str:
    """``points`` (time, value) held until the next point, as one SVG path with a circle per
    point (``data-points`` counts them) and a labelled line per marker."""
    if not points:
        return _frame(title, y_max, unit, ['<text class="empty" x="50%" y="50%">no data</text>'])
    t0 = min([p[0] for p in points] + [m.at for m in markers])
    t1 = max([p[0] for p in points] + [m.at for m in markers])
    kx, bx = _scale(t0, t1, _PAD, _W - 8)
    ky, by = _scale(0, y_max, _H - _PAD, 8)
    d: list[str] = []
    dots: list[str] = []
    prev_y: float | None = None
    for t, v in points:
        x, y = kx * t + bx, ky * v + by
        if prev_y is None:
            d.append(f"M{x:.1f},{y:.1f}")
        else:
            d.append(f"H{x:.1f}V{y:.1f}")
        prev_y = y
        dots.append(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3"/>')
    body = [f'<path class="line" d="{" ".join(d)}" data-points="{len(points)}"/>', *dots]
    for i, m in enumerate(markers):
        x = kx * m.at + bx
        y = _H - 8 - 10 * (i % 3)  # markers close in time: their labels on different rows
        body.append(
            f'<g class="marker {escape(m.kind)}"><line x1="{x:.1f}" y1="8" x2="{x:.1f}"'
            f' y2="{_H - _PAD}"/><text x="{x - 2:.1f}" y="{y}" text-anchor="end">'
            f"{escape(m.label)}</text></g>"
        )
    return _frame(title, y_max, unit, body)


def line_chart(
    title: str,
    series: Sequence[Series],
    *,
    unit: str = "",
    x_range: tuple[float, float] | None = None,
) -> str:
    """Each series as a polyline with a dot per point (one point is a dot, not an invisible
    line) and its name in a legend; the y axis starts at 0, the x axis spans ``x_range``
    (and every point)."""
    pts = [p for s in series for p in s.points]
    if not pts:
        return _frame(title, 0, unit, ['<text class="empty" x="50%" y="50%">no data</text>'])
    y_max = max(v for _, v in pts) or 1.0
    t0, t1 = min(t for t, _ in pts), max(t for t, _ in pts)
    if x_range is not None:  # the points placed in their span of time, not stretched over it
        t0, t1 = min(t0, x_range[0]), max(t1, x_range[1])
    kx, bx = _scale(t0, t1, _PAD, _W - 8)
    ky, by = _scale(0, y_max, _H - _PAD, 8)
    body: list[str] = []
    for i, s in enumerate(series):
        xy = [(kx * t + bx, ky * v + by) for t, v in s.points]
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        body.append(
            f'<polyline class="line {escape(s.css)}" points="{line}" data-points="{len(xy)}"/>'
        )
        body.extend(
            f'<circle class="dot {escape(s.css)}" cx="{x:.1f}" cy="{y:.1f}" r="1.5"/>'
            for x, y in xy
        )
        body.append(
            f'<text class="legend {escape(s.css)}" x="{_W - 140}" y="{20 + 14 * i}">'
            f"{escape(s.name)}</text>"
        )
    return _frame(title, y_max, unit, body)
