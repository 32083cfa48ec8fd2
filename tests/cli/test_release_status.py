"""`coalmine release status`: the verdict and, per judged metric, the evidence against what
a step waits for (rendered from the latest analysis event, as the API returns it)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from coalmine.cli.release import render_status

RELEASE: dict[str, Any] = {
    "id": "shop-7",
    "app": "shop",
    "phase": "running",
    "route_mode": "user",
    "strategy": "Canary10Percent5Minutes",
    "baseline": {"cart": "v1"},
    "candidate": {"cart": "v2"},
    "changed": ["cart"],
    "steps": [{"exposure": 1000, "hold": 300}, {"exposure": 10000, "hold": 0}],
    "step": 0,
    "exposure": 1000,
    "next_action_at": 900.0,
    "reason": None,
}


def _analysis(at: float, message: str, evidence: dict[str, Any] | None) -> dict[str, Any]:
    data: dict[str, Any] = {"run": 1, "outcome": "pass", "action": "continue"}
    if evidence is not None:
        data["evidence"] = evidence
    return {
        "id": int(at),
        "at": at,
        "actor": "judge",
        "kind": "analysis",
        "message": message,
        "data": data,
    }


def _text(events: list[dict[str, Any]]) -> str:
    console = Console(width=120, record=True, color_system=None)
    console.print(render_status(RELEASE, events, now=1000.0))
    return console.export_text()


def test_status_shows_each_metrics_evidence_against_what_it_needs() -> None:
    evidence = {
        "open": False,
        "reason": "waiting for evidence: cart error_rate 1,200 of 3,684 canary requests",
        "metrics": [
            {"function": "cart", "metric": "error_rate", "evidence": 1200, "needed": 3684},
            {"function": "cart", "metric": "latency_p99", "evidence": 1200, "needed": 1986},
            {"function": "cart", "metric": "latency_p50", "evidence": 1200, "needed": 784},
            {"function": "cart", "metric": "latency_p95", "evidence": 1200, "needed": None},
        ],
    }
    text = _text(
        [
            _analysis(900.0, "canary passed analysis: older", None),
            _analysis(960.0, "canary passed analysis: cart error_rate: ...", evidence),
        ]
    )
    assert "analysis: canary passed analysis: cart error_rate: ..." in text
    lines = [line.strip() for line in text.splitlines()]
    assert any(line.startswith("evidence (a step waits for every metric)") for line in lines), text
    rows = [" ".join(line.split()) for line in lines]
    assert "cart error_rate 1,200 3,684 canary requests" in rows
    assert "cart latency_p99 1,200 1,986 canary latencies" in rows
    assert "cart latency_p50 1,200 784 canary latencies" in rows
    assert "cart latency_p95 1,200 unknown yet" in rows


def test_status_without_judged_evidence_shows_none() -> None:
    text = _text([_analysis(960.0, "canary passed analysis: ...", None)])
    assert "evidence" not in text
    assert "analysis: no analysis yet" in _text([])
