"""Smoke test of bench/controller_tick.py, and the property it shows.

The counts are exact (transactions and statements, not time), so one
property is asserted: a tick with nothing due reads a fixed number of
times however many releases are running (no per-release reads when idle).
"""

from __future__ import annotations

from typing import Any

from tests.bench import run_bench

TICKS = ["start", "idle", "analysis", "idle_after"]


def run(releases: int, webhooks: int = 0) -> dict[str, Any]:
    out = run_bench(
        "controller_tick.py", "--releases", str(releases), "--webhooks", str(webhooks), min_lines=4
    )
    assert out["bench"] == "controller_tick"
    assert out["releases"] == releases
    assert out["webhooks"] == webhooks
    assert out["base"] is None
    for what in ("transactions_per_release", "statements_per_release"):
        assert list(out[what]) == TICKS
    return out


def test_an_idle_tick_costs_the_same_for_2_and_for_6_releases() -> None:
    two, six = run(2), run(6)
    for tick in ("idle", "idle_after"):
        for what in ("transactions_per_release", "statements_per_release"):
            assert round(two[what][tick] * 2) == round(six[what][tick] * 6), (tick, what)
    # a due release costs its own transaction: the start tick grows with the releases
    assert (
        six["transactions_per_release"]["start"] * 6 > two["transactions_per_release"]["start"] * 2
    )


def test_the_webhook_outbox_costs_one_statement_per_event_however_many_webhooks() -> None:
    """Each release event's deliveries are one INSERT in the event's own transaction."""
    none, one, three = run(2), run(2, webhooks=1), run(2, webhooks=3)
    assert one["transactions_per_release"] == none["transactions_per_release"]
    assert three["statements_per_release"] == one["statements_per_release"]
    # the start tick writes one event per release (started); the analysis tick one (analysis)
    for tick in ("start", "analysis"):
        assert one["statements_per_release"][tick] == none["statements_per_release"][tick] + 1
    for tick in ("idle", "idle_after"):
        assert one["statements_per_release"][tick] == none["statements_per_release"][tick]
