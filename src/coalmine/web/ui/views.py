"""The dashboard's HTML fragments: the apps list and one release's page.

Built from the API's read schemas; every value from the store passes through
`html.escape` (app names, versions, reasons and messages are user text).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from html import escape
from typing import Any

from coalmine.controller.schemas import AnalysisRunRead, AppRead, EventRead, ReleaseRead
from coalmine.core import BUCKETS
from coalmine.core.histogram import VersionMetrics
from coalmine.web.ui.svg import Marker, Series, line_chart, step_chart

__all__ = [
    "CHARTED_FUNCTIONS",
    "Span",
    "VersionSeries",
    "apps_fragment",
    "chain",
    "release_fragment",
]

CHARTED_FUNCTIONS = 20
"""functions of a release charted per version (the first, by name)"""
VersionSeries = dict[tuple[str, str], list[tuple[float, VersionMetrics]]]
"""(function, channel) -> (time, that version's metrics in the span from then)"""
Span = tuple[float, float]
"""the seconds the per-version charts cover: (since, until)"""
_QUANTILES = ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"))

_ACTIVE = frozenset({"pending", "running", "paused", "promoting", "rolling_back"})
_MARKED = {
    "paused": "pause",
    "alarm": "alarm",
    "rolling_back": "rollback",
    "rolled_back": "rollback",
}
_ALERT = frozenset({"rolling_back", "rolled_back", "failed", "hook_failed", "alarm"})
_OPERATIONS = ("promote", "rollback", "pause", "resume")
_ROLLED_BACK = frozenset({"rolling_back", "rolled_back", "failed"})


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _pct(exposure: int) -> str:
    return f"{exposure * 100 / BUCKETS:g}%"


def _when(at: float | None) -> str:
    if at is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) + "Z"


def _link(release_id: str) -> str:
    return f'<a href="#/releases/{_e(release_id)}">{_e(release_id)}</a>'


def apps_fragment(apps: Sequence[AppRead], releases: dict[str, ReleaseRead]) -> str:
    """Every app with its functions' current versions and its active release, if any."""
    if not apps:
        return '<p class="empty">no apps yet</p>'
    rows = []
    for app in apps:
        current = ", ".join(f"{_e(f.name)}={_e(f.current_version or '-')}" for f in app.functions)
        rel = releases.get(app.active_release or "")
        active = (
            f'{_link(rel.id)} <span class="phase {_e(rel.phase)}">{_e(rel.phase)}</span>'
            f" {_pct(rel.exposure)}"
            if rel is not None
            else "none"
        )
        rows.append(
            f'<tr class="app"><td class="name">{_e(app.name)}</td><td>{current}</td>'
            f"<td>{active}</td></tr>"
        )
    return (
        '<table class="apps"><thead><tr><th>app</th><th>current versions</th>'
        "<th>active release</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _plan(rel: ReleaseRead) -> str:
    items = []
    for st in rel.steps:
        state = "done" if st.index < rel.step else "current" if st.index == rel.step else "next"
        if rel.phase not in _ACTIVE and rel.phase != "pending":
            state = "done" if rel.phase == "promoted" else state
        items.append(
            f'<li class="step {state}" data-step="{st.index}">{_pct(st.exposure)}'
            f" for {st.hold:g}s</li>"
        )
    return '<ol class="plan">' + "".join(items) + "</ol>"


def _exposure_chart(rel: ReleaseRead, events: Sequence[EventRead], now: float) -> str:
    points = [(e.at, e.exposure * 100 / BUCKETS) for e in events if e.exposure is not None]
    if rel.phase in _ACTIVE:
        points.append((now, rel.exposure * 100 / BUCKETS))
    markers = [Marker(e.at, e.kind, _MARKED[e.kind]) for e in events if e.kind in _MARKED]
    return step_chart("exposure over time", points, y_max=100, unit="%", markers=markers)


def _metric_charts(runs: Sequence[AnalysisRunRead]) -> str:
    """Canary against stable per function and metric, from the judge's runs."""
    series: dict[tuple[str, str], dict[str, list[tuple[float, float]]]] = {}
    for run in runs:
        for fn, verdict in (run.results.get("functions") or {}).items():
            for m in verdict.get("metrics") or []:
                for side in ("canary", "stable"):
                    value = m.get(side)
                    if isinstance(value, int | float):
                        key = (str(fn), str(m.get("name")))
                        series.setdefault(key, {}).setdefault(side, []).append((run.at, value))
    charts = [
        line_chart(
            f"{fn}: {name}",
            [Series(side, tuple(pts), side) for side, pts in sorted(sides.items())],
        )
        for (fn, name), sides in sorted(series.items())
    ]
    return "".join(charts) or '<p class="empty">no analysis yet</p>'


def chain(rel: ReleaseRead) -> dict[str, tuple[str, str]]:
    """function -> (the version the stable channel runs, the one the canary channel runs).

    While a release is active the canary channel runs the candidates; once it is rolled
    back, both run the baseline (a late canary context is sent there too); once it is
    promoted, both run the candidates.
    """
    out: dict[str, tuple[str, str]] = {}
    for fn in sorted(set(rel.baseline) | set(rel.candidate)):
        old = rel.baseline.get(fn) or rel.candidate.get(fn, "-")
        new = rel.candidate.get(fn) or old
        if rel.phase in _ROLLED_BACK:
            out[fn] = (old, old)
        elif rel.phase == "promoted":
            out[fn] = (new, new)
        else:
            out[fn] = (old, new)
    return out


def _chain_table(rel: ReleaseRead) -> str:
    rows = []
    for fn, (stable, canary) in chain(rel).items():
        changed = " changed" if stable != canary else ""
        rows.append(
            f'<tr class="function{changed}" data-function="{_e(fn)}"><td>{_e(fn)}</td>'
            f'<td class="stable">{_e(stable)}</td><td class="canary">{_e(canary)}</td></tr>'
        )
    return (
        '<table class="chain"><thead><tr><th>function</th><th>stable runs</th>'
        "<th>canary runs</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _version_charts(rel: ReleaseRead, series: VersionSeries, span: Span | None) -> str:
    """Per function: each channel's error rate, and its p50/p95/p99 latency, over time."""
    out: list[str] = []
    for fn in sorted(rel.candidate)[:CHARTED_FUNCTIONS]:
        stable_v, canary_v = rel.baseline.get(fn, "-"), rel.candidate[fn]
        sides = (("canary", canary_v), ("stable", stable_v))
        errors: list[Series] = []
        latency: list[Series] = []
        for side, version in sides:
            spans = series.get((fn, side), [])
            errors.append(
                Series(
                    f"{side} {version}",
                    tuple((t, 100 * r) for t, m in spans if (r := m.error_rate) is not None),
                    side,
                )
            )
            for q, label in _QUANTILES:
                latency.append(
                    Series(
                        f"{side} {version} {label}",
                        tuple(
                            (t, v) for t, m in spans if (v := m.histogram.quantile(q)) is not None
                        ),
                        f"{side} {label}",
                    )
                )
        out.append(
            f'<div class="function-charts" data-function="{_e(fn)}">'
            + line_chart(f"{fn}: error rate", errors, unit="%", x_range=span)
            + line_chart(f"{fn}: latency p50 / p95 / p99", latency, unit="ms", x_range=span)
            + "</div>"
        )
    return "".join(out) or '<p class="empty">no functions</p>'


def _num(value: Any, unit: str = "") -> str:
    return f"{value:.4g}{_e(unit)}" if isinstance(value, int | float) else ""


def _judge_table(runs: Sequence[AnalysisRunRead]) -> str:
    rows = []
    for run in runs:
        for fn, verdict in sorted((run.results.get("functions") or {}).items()):
            for m in verdict.get("metrics") or []:
                unit = str(m.get("change_unit") or "")
                rows.append(
                    f'<tr class="{_e(m.get("outcome"))}"><td>{_when(run.at)}</td>'
                    f"<td>{_e(fn)}</td><td>{_e(m.get('name'))}</td>"
                    f"<td>{_num(m.get('canary'))}</td><td>{_num(m.get('stable'))}</td>"
                    f"<td>{_num(m.get('change'), unit)}</td><td>{_num(m.get('limit'), unit)}</td>"
                    f"<td>{_num(m.get('p_value'))}</td><td>{_e(m.get('outcome'))}</td>"
                    f"<td>{_e(m.get('reason') or '')}</td></tr>"
                )
    if not rows:
        return '<p class="empty">no analysis runs yet</p>'
    return (
        '<table class="judge"><thead><tr><th>at</th><th>function</th><th>metric</th>'
        "<th>canary</th><th>stable</th><th>change</th><th>limit</th><th>p-value</th>"
        "<th>verdict</th><th>reason</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _timeline(events: Sequence[EventRead]) -> str:
    items = [
        f'<li class="event {_e(e.kind)}{" alert" if e.kind in _ALERT else ""}">'
        f"<time>{_when(e.at)}</time> <b>{_e(e.kind)}</b> {_e(e.message)}"
        f' <span class="actor">by {_e(e.actor)}</span></li>'
        for e in events
    ]
    return '<ol class="timeline">' + "".join(items) + "</ol>"


def release_fragment(
    rel: ReleaseRead,
    events: Sequence[EventRead],
    runs: Sequence[AnalysisRunRead],
    now: float,
    series: VersionSeries | None = None,
    span: Span | None = None,
) -> str:
    """One release: its state, plan, chain, charts, the judge's table, its events, buttons."""
    versions = ", ".join(
        f"{_e(fn)}: {_e(rel.baseline.get(fn, '-'))} &rarr; {_e(v)}"
        for fn, v in sorted(rel.candidate.items())
        if fn in rel.changed
    )
    reason = f'<p class="reason alert">{_e(rel.reason)}</p>' if rel.reason else ""
    buttons = "".join(
        f'<button type="button" class="op" data-op="{op}" data-release="{_e(rel.id)}">{op}</button>'
        for op in _OPERATIONS
    )
    return (
        f'<section class="release" data-release="{_e(rel.id)}" data-app="{_e(rel.app)}"'
        f' data-phase="{_e(rel.phase)}">'
        f"<h2>{_e(rel.app)} / {_e(rel.id)}</h2>"
        f'<p>phase <b class="phase {_e(rel.phase)}">{_e(rel.phase)}</b>, exposure'
        f' <b class="exposure">{_pct(rel.exposure)}</b>, step {rel.step + 1} of'
        f" {len(rel.steps)} ({_e(rel.strategy)}, {_e(rel.route_mode)}); {versions}</p>"
        f'{reason}<div class="ops">{buttons}</div>'
        f"<h3>plan</h3>{_plan(rel)}"
        f"<h3>which version each channel runs</h3>{_chain_table(rel)}"
        f"<h3>exposure</h3>{_exposure_chart(rel, events, now)}"
        f"<h3>per version: error rate and latency</h3>{_version_charts(rel, series or {}, span)}"
        f"<h3>the judge's metrics, canary against stable</h3>{_metric_charts(runs)}"
        f"<h3>the judge, per interval</h3>{_judge_table(runs)}"
        f"<h3>events</h3>{_timeline(events)}</section>"
    )
