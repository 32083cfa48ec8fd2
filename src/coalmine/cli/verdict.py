"""The judge's verdict as the CLI shows it: one row per function and metric (canary,
stable, change, limit, p-value, pass/fail) from an analysis run as the API returns it
(``GET /v1/releases/{id}/analysis``), and the run's one sentence, once."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from coalmine.cli.output import when

__all__ = ["OUTCOME_STYLE", "render_run", "verdict_rows", "verdict_sentence", "verdict_table"]

OUTCOME_STYLE = {"pass": "green", "fail": "bold red", "inconclusive": "yellow"}
NOT_JUDGED = "not judged"


def verdict_rows(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Each function's metrics, in the run's order; an idle function (no call in either
    channel) is one row whose outcome is ``not judged``. Numbers as stored: error rate in
    percent, latency in milliseconds; ``change`` and ``limit`` in ``unit``."""
    rows: list[dict[str, Any]] = []
    functions = (run.get("results") or {}).get("functions") or {}
    for fn, verdict in functions.items():
        if not isinstance(verdict, dict):
            continue
        if verdict.get("idle"):
            rows.append(
                {
                    "function": fn,
                    "metric": None,
                    "canary": None,
                    "stable": None,
                    "change": None,
                    "limit": None,
                    "unit": "",
                    "p_value": None,
                    "outcome": NOT_JUDGED,
                    "reason": "no call in either channel since traffic started",
                }
            )
            continue
        for m in verdict.get("metrics") or []:
            rows.append(
                {
                    "function": fn,
                    "metric": m.get("name"),
                    "canary": m.get("canary"),
                    "stable": m.get("stable"),
                    "change": m.get("change"),
                    "limit": m.get("limit"),
                    "unit": m.get("change_unit") or "",
                    "p_value": m.get("p_value"),
                    "outcome": m.get("outcome"),
                    "reason": m.get("reason"),
                }
            )
    return rows


def verdict_sentence(run: dict[str, Any]) -> str:
    """The run's verdict in one sentence: what the tracker made of it (else the judge's)."""
    results = run.get("results") or {}
    tracker = results.get("tracker") or {}
    return str(tracker.get("reason") or results.get("reason") or run.get("outcome") or "")


def _value(metric: str | None, value: Any) -> str:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    if metric == "error_rate":
        return f"{value:.3g}%"
    if metric and metric.startswith("latency_"):
        return f"{value:,.4g} ms"
    return f"{value:,.4g}"


def _change(value: Any, unit: str, *, limit: bool = False) -> str:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    text = f"+{value:g}" if limit else f"{value:+.3g}"
    return f"{text} {unit}".rstrip() if unit == "pp" else f"{text}{unit}"


def _p(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, int | float) and math.isfinite(value) else "-"


def verdict_table(run: dict[str, Any]) -> Table:
    """The run's rows as a table a person reads."""
    table = Table(
        "function",
        "metric",
        "canary",
        "stable",
        "change",
        "limit",
        "p-value",
        "pass/fail",
        box=None,
        pad_edge=False,
    )
    for row in verdict_rows(run):
        outcome = str(row["outcome"])
        table.add_row(
            row["function"],
            row["metric"] or "-",
            _value(row["metric"], row["canary"]),
            _value(row["metric"], row["stable"]),
            _change(row["change"], row["unit"]),
            _change(row["limit"], row["unit"], limit=True),
            _p(row["p_value"]),
            Text(outcome, style=OUTCOME_STYLE.get(outcome, "dim")),
        )
    return table


def render_run(run: dict[str, Any]) -> Group:
    """One analysis run: when and what it decided, the table, the sentence once, the notes
    and the evidence gate."""
    outcome = str(run.get("outcome"))
    head = Text.assemble(
        f"analysis run {run.get('id')} at {when(run.get('at'))}"
        f" (window {when(run.get('window_start'))} to {when(run.get('window_end'))}): ",
        (outcome, OUTCOME_STYLE.get(outcome, "")),
        f", {run.get('action')}",
    )
    parts: list[Any] = [head, verdict_table(run), Text(f"verdict: {verdict_sentence(run)}")]
    results = run.get("results") or {}
    for note in results.get("notes") or []:
        parts.append(Text(f"note: {note}", style="dim"))
    evidence = results.get("evidence") or {}
    if isinstance(evidence, dict) and evidence and not evidence.get("open"):
        parts.append(Text(f"step waits: {evidence.get('reason') or 'for the judge'}"))
    return Group(*parts)
