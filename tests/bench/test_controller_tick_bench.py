"""Smoke test of bench/controller_tick.py, and the property it shows.

The counts are exact (transactions and statements, not time), so one
property is asserted: a tick with nothing due reads a fixed number of
times however many releases are running (no per-release reads when idle).
"""

from __future__ import annotations

from typing import Any

from tests.bench import run_bench

TICKS = ["start", "idle", "analysis", "idle_after"]


def run(releases: int) -> dict[str, Any]:
    out = run_bench("controller_tick.py", "--releases", str(releases), min_lines=4)
    assert out["bench"] == "controller_tick"
    assert out["releases"] == releases
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
