"""Charts of one release for `coalmine report`: a matplotlib figure, and an HTML page around it.

Input is what the control plane's API returns (the release, its events, its
analysis runs); nothing here talks HTTP. The figure has exposure over time as a
step line with the lifecycle events marked, per-version error rate and latency
as the judge measured them per interval, and a strip of the judge's verdicts.
matplotlib is the ``report`` extra; the caller checks for it first.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass, field
from typing import Any

import matplotlib

# a bare Figure, not pyplot: no display, no global figure state, Agg renders the files
from matplotlib.figure import Figure

__all__ = ["Series", "html_page", "render", "series"]

# events drawn as vertical markers on the exposure chart, with their label and colour
MARKERS: dict[str, tuple[str, str]] = {
    "started": ("start", "tab:blue"),
    "step": ("step", "tab:blue"),
    "paused": ("pause", "tab:orange"),
    "resumed": ("resume", "tab:green"),
    "promoting": ("promote", "tab:green"),
    "promoted": ("promoted", "tab:green"),
    "rolling_back": ("rollback", "tab:red"),
    "rolled_back": ("rolled back", "tab:red"),
    "failed": ("failed", "tab:red"),
    "alarm": ("alarm", "tab:purple"),
}
OUTCOME_COLOUR = {"pass": "tab:green", "fail": "tab:red", "inconclusive": "tab:gray"}


@dataclass
class Series:
    """The numbers of a release's report, in seconds since its first event."""

    release: dict[str, Any]
    t0: float
    """when the first event happened (epoch seconds)"""
    end: float
    """the last event or run, in seconds since ``t0``"""
    exposure: list[tuple[float, float]] = field(default_factory=list)
    """(seconds, percent) at each change of exposure"""
    markers: list[tuple[float, str, str]] = field(default_factory=list)
    """(seconds, label, colour)"""
    metrics: dict[str, dict[str, list[tuple[float, float]]]] = field(default_factory=dict)
    """metric name -> line label ("fn v2 (canary)") -> (seconds, value) points"""
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    """one row per analysis run: seconds, outcome, action, reason"""
    judged: list[dict[str, Any]] = field(default_factory=list)
    """one row per run, function and metric: the judge's numbers"""


def _pct(bp: int) -> str:
    return f"{bp / 100:g}%"


def series(
    release: dict[str, Any], events: list[dict[str, Any]], runs: list[dict[str, Any]]
) -> Series:
    """Turn the API's reads into the report's series."""
    times = [e["at"] for e in events] + [r["window_end"] for r in runs]
    t0 = min(times, default=float(release.get("created_at") or 0.0))
    out = Series(release=release, t0=t0, end=max(times, default=t0) - t0)
    for ev in events:
        t = ev["at"] - t0
        if ev.get("exposure") is not None:
            pct = ev["exposure"] / 100
            if not out.exposure or out.exposure[-1][1] != pct:
                out.exposure.append((t, pct))
        marker = MARKERS.get(ev["kind"])
        if marker is not None:
            label, colour = marker
            if ev["kind"] in ("started", "step") and ev.get("exposure") is not None:
                label = f"{label} {_pct(ev['exposure'])}"
            out.markers.append((t, label, colour))
    baseline = release.get("baseline") or {}
    candidate = release.get("candidate") or {}
    for run in runs:
        t = run["window_end"] - t0
        results = run.get("results") or {}
        for fn, verdict in sorted((results.get("functions") or {}).items()):
            for m in verdict.get("metrics") or []:
                name = str(m.get("name"))
                out.judged.append({"t": t, "function": fn, **m})
                if name != "error_rate" and not name.startswith("latency"):
                    continue
                lines = out.metrics.setdefault(name, {})
                for side, versions in (("canary", candidate), ("stable", baseline)):
                    value = m.get(side)
                    if value is not None:
                        label = f"{fn} {versions.get(fn, '?')} ({side})"
                        lines.setdefault(label, []).append((t, float(value)))
        out.verdicts.append(
            {
                "t": t,
                "outcome": str(run.get("outcome", "")),
                "action": str(run.get("action", "")),
                "reason": str(results.get("reason") or ""),
            }
        )
    return out


def _unit(name: str) -> str:
    return "error rate (%)" if name == "error_rate" else f"{name} (ms)"


def figure(s: Series) -> Figure:
    """The report's figure: exposure, one panel per metric, the verdict strip."""
    names = sorted(s.metrics)
    heights = [3.0] + [2.2] * len(names) + [0.8]
    fig = Figure(figsize=(10, sum(heights) + 1.2))
    axes = fig.subplots(
        len(heights),
        1,
        sharex=True,
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    ax = axes[0][0]
    rel = s.release
    changed = ", ".join(
        f"{fn} {rel['baseline'].get(fn, '?')} -> {rel['candidate'].get(fn, '?')}"
        for fn in rel.get("changed", [])
    )
    fig.suptitle(f"{rel['id']}  {rel.get('phase', '')}  {changed}", fontsize=11)
    if s.exposure:
        xs = [t for t, _ in s.exposure] + [s.end]
        ys = [p for _, p in s.exposure] + [s.exposure[-1][1]]
        ax.step(xs, ys, where="post", color="tab:blue", linewidth=2, label="exposure")
    ax.set_ylim(-5, 110)
    ax.set_ylabel("exposure (%)")
    last, side = float("-inf"), "right"
    for t, label, colour in s.markers:
        for row in axes:
            row[0].axvline(t, color=colour, linestyle=":", linewidth=1)
        # a marker right after another (rolling back, then rolled back) labels the other side
        side = ("left" if side == "right" else "right") if t - last < 0.015 * s.end else "right"
        last = t
        ax.annotate(
            label,
            (t, 102),
            rotation=90,
            fontsize=7,
            color=colour,
            va="top",
            ha=side,
            annotation_clip=False,
        )
    for i, name in enumerate(names, start=1):
        panel = axes[i][0]
        for label, points in sorted(s.metrics[name].items()):
            style = "-" if label.endswith("(canary)") else "--"
            panel.plot([t for t, _ in points], [v for _, v in points], style, marker="o", ms=3)
            panel.lines[-1].set_label(label)
        panel.set_ylabel(_unit(name), fontsize=8)
        panel.legend(fontsize=7, loc="upper left")
    strip = axes[-1][0]
    strip.set_yticks([])
    strip.set_ylabel("judge", fontsize=8)
    for v in s.verdicts:
        strip.scatter([v["t"]], [0], color=OUTCOME_COLOUR.get(v["outcome"], "black"), s=40)
    if not s.verdicts:
        strip.text(0.5, 0.5, "no analysis runs", transform=strip.transAxes, ha="center")
    strip.set_xlabel("seconds since the release started")
    fig.tight_layout()
    return fig


def render(s: Series, fmt: str) -> bytes:
    """The figure as ``png`` or ``svg`` bytes."""
    buf = io.BytesIO()
    # text stays text in the SVG (searchable, and labels a test can find); a name with a
    # "$" is a name, not mathtext
    with matplotlib.rc_context({"svg.fonttype": "none", "text.parse_math": False}):
        fig = figure(s)
        # no date in the metadata: the same release gives the same file
        fig.savefig(buf, format=fmt, dpi=100, metadata={"Date": None})
    return buf.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def html_page(s: Series) -> str:
    """A self-contained page: the SVG inline, then the verdicts; every value escaped."""
    svg = render(s, "svg").decode()
    svg = svg[svg.index("<svg") :]  # drop the XML declaration and DOCTYPE
    rel = s.release
    e = html.escape
    rows = "\n".join(
        f"<tr><td>{v['t']:.0f}s</td><td class='{e(v['outcome'])}'>{e(v['outcome'])}</td>"
        f"<td>{e(v['action'])}</td><td>{e(v['reason'])}</td></tr>"
        for v in s.verdicts
    )
    judged = "\n".join(
        "<tr class='m'>"
        + "".join(
            f"<td>{e(_cell(m.get(k)))}</td>"
            for k in ("function", "name", "canary", "stable", "change", "limit", "p_value")
        )
        + f"<td class='{e(str(m.get('outcome')))}'>{e(str(m.get('outcome')))}</td></tr>"
        for m in s.judged
    )
    reason = rel.get("reason") or ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>coalmine report {e(str(rel["id"]))}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; }}
.fail {{ color: #b00; }} .pass {{ color: #070; }} .inconclusive {{ color: #666; }}
</style></head><body>
<h1>{e(str(rel["id"]))}: {e(str(rel.get("phase", "")))}</h1>
<p>reason: {e(str(reason)) or "-"}</p>
{svg}
<h2>Judge's verdicts</h2>
<table><thead><tr><th>at</th><th>outcome</th><th>action</th><th>reason</th></tr></thead>
<tbody>
{rows or "<tr><td colspan='4'>no analysis runs</td></tr>"}
</tbody></table>
<h2>Per function and metric</h2>
<p>Error rate in percent, latency in milliseconds; change and limit in the metric's
change unit.</p>
<table><thead><tr><th>function</th><th>metric</th><th>canary</th><th>stable</th>
<th>change</th><th>limit</th><th>p-value</th><th>verdict</th></tr></thead>
<tbody>
{judged}
</tbody></table>
</body></html>
"""
