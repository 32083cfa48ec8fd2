"""What the judge carries between looks: increments from cumulative windows, and thresholds
chosen before the data they judge."""

from __future__ import annotations

import json

import pytest

from coalmine.core.errors import InvalidInput
from coalmine.core.histogram import LatencyHistogram
from coalmine.core.sequential import (
    Increment,
    JudgeState,
    MetricState,
    error_look,
    exceedance_look,
)
from coalmine.core.stats import RateTest


def _hist(values: dict[float, int]) -> LatencyHistogram:
    h = LatencyHistogram()
    for value, count in values.items():
        h.add(value, count)
    return h


def test_error_looks_take_the_increment_of_cumulative_counts() -> None:
    first, inc = error_look(None, 3, 100, 10, 900)
    assert inc == Increment(3, 100, 10, 900)
    assert first.seen == (3, 100, 10, 900)
    second, inc = error_look(first, 5, 150, 12, 1400)
    assert inc == Increment(2, 50, 2, 500)
    assert second.test == RateTest().observe(3, 100, 10, 900).observe(2, 50, 2, 500)
    # counts that shrank (windows deleted) add nothing; the next look starts from them
    third, inc = error_look(second, 1, 20, 1, 100)
    assert inc == Increment(0, 0, 0, 0)
    assert third.seen == (1, 20, 1, 100)
    assert inc.canary_share is None


def test_the_first_exceedance_look_uses_the_pooled_quantile() -> None:
    canary = _hist({10.0: 50, 30.0: 50})
    stable = _hist({10.0: 850, 30.0: 50})
    state, inc = exceedance_look(None, 0.9, canary, stable)
    pooled = stable.copy()
    pooled.merge(canary)
    bucket = pooled.quantile_bucket(0.9)
    assert bucket == canary.index_of(10.0)  # rank 899 of 1,000 lies at 10 ms
    assert inc == Increment(50, 100, 50, 900)  # the values above it: every 30 ms one
    # the next look counts above stable's p90 as of this look
    assert state.threshold == stable.quantile_bucket(0.9)
    assert state.seen == (
        canary.count_above_bucket(state.threshold),
        100,
        stable.count_above_bucket(state.threshold),
        900,
    )


def test_later_exceedance_looks_use_the_threshold_chosen_before() -> None:
    canary = _hist({10.0: 50, 30.0: 50})
    stable = _hist({10.0: 850, 30.0: 50})
    state, _ = exceedance_look(None, 0.9, canary, stable)
    threshold = state.threshold
    # stable gets much slower: its quantile moves, but this look still counts above the old one
    canary.merge(_hist({30.0: 10}))
    stable.merge(_hist({100.0: 900}))
    after, inc = exceedance_look(state, 0.9, canary, stable)
    assert inc == Increment(
        canary.count_above_bucket(threshold) - state.seen[0],
        10,
        stable.count_above_bucket(threshold) - state.seen[2],
        900,
    )
    assert inc.stable_events == 900
    assert inc.canary_events == 10
    assert after.threshold == stable.quantile_bucket(0.9) == stable.index_of(100.0)


def test_no_latency_at_all_is_an_empty_look() -> None:
    state, inc = exceedance_look(None, 0.99, LatencyHistogram(), LatencyHistogram())
    assert inc == Increment(0, 0, 0, 0)
    assert state.test == RateTest()


def test_the_state_round_trips_and_is_validated() -> None:
    canary = _hist({10.0: 50, 30.0: 50})
    stable = _hist({10.0: 850, 30.0: 50})
    p99, _ = exceedance_look(None, 0.99, canary, stable)
    errors, _ = error_look(None, 1, 100, 2, 900)
    state = JudgeState({"error_rate": errors, "latency_p99": p99})
    data = json.loads(json.dumps(state.to_dict()))
    assert JudgeState.from_dict(data) == state
    good = data["latency_p99"]
    for bad in (
        {**good, "seen": [1, 2, 3]},
        {**good, "seen": [5, 2, 0, 1]},
        {**good, "seen": [0, 2, -1, 1]},
        {**good, "threshold": "high"},
        {**good, "test": {}},
    ):
        with pytest.raises(InvalidInput):
            JudgeState.from_dict({"latency_p99": bad})
    with pytest.raises(InvalidInput, match="judge state must be an object"):
        JudgeState.from_dict([])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="metric state must be an object"):
        MetricState.from_dict(3)  # type: ignore[arg-type]
