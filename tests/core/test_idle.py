"""A function that served no call in either channel is idle: not judged, holding nothing.

The gate over verdicts with idle functions is the gate over the judged ones (by
property); when every function is idle, ``idle: clock`` opens it (the steps go by the
strategy) and ``idle: pause`` keeps it shut and pauses the release once a hold is over.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalmine.core.analysis import AnalysisSettings, IdlePolicy, InconclusivePolicy
from coalmine.core.errors import InvalidInput
from coalmine.core.gate import evidence_gate, stalled
from coalmine.core.histogram import VersionMetrics
from coalmine.core.judge import judge
from coalmine.core.model import Channel
from coalmine.core.verdict import Outcome, Verdict

SETTINGS = AnalysisSettings(power=0.8)
CLOCK = AnalysisSettings(power=0.8, idle=IdlePolicy.CLOCK)


def traffic(channel: str, requests: int, errors: int) -> VersionMetrics:
    m = VersionMetrics("shop", "cart", "v2" if channel == "canary" else "v1", Channel(channel))
    for i in range(requests):
        m.record(10.0, error=i < errors)
    return m


IDLE = judge(traffic("canary", 0, 0), traffic("stable", 0, 0), SETTINGS)
SIDES = st.sampled_from([(0, 0), (5000, 50), (1000, 10), (1000, 40), (50, 0), (300, 0)])


@st.composite
def verdicts(draw: st.DrawFn) -> dict[str, Verdict]:
    out = {}
    for i in range(draw(st.integers(1, 4))):
        canary, errors = draw(SIDES)
        stable = 0 if canary == 0 else draw(st.sampled_from([0, 9 * canary]))
        out[f"fn{i}"] = judge(
            traffic("canary", canary, errors), traffic("stable", stable, stable // 100), SETTINGS
        )
    return out


def test_no_call_in_either_channel_is_idle_and_a_call_on_one_side_is_not() -> None:
    assert IDLE.idle
    assert IDLE.outcome is Outcome.INCONCLUSIVE
    assert IDLE.waiting
    assert IDLE.to_dict()["idle"] is True
    canary_only = judge(traffic("canary", 300, 0), traffic("stable", 0, 0), SETTINGS)
    stable_only = judge(traffic("canary", 0, 0), traffic("stable", 300, 3), SETTINGS)
    assert not canary_only.idle
    assert not stable_only.idle


@given(verdicts(), st.sampled_from([SETTINGS, CLOCK]))
def test_idle_functions_hold_nothing_the_gate_is_the_judged_ones(
    given_verdicts: dict[str, Verdict], settings: AnalysisSettings
) -> None:
    judged = {fn: v for fn, v in given_verdicts.items() if not v.idle}
    gate = evidence_gate({**given_verdicts, "idle-fn": IDLE}, settings)
    assert "idle-fn" in gate.idle
    if judged:
        alone = evidence_gate(judged, settings)
        assert (gate.open, gate.reason, gate.metrics) == (alone.open, alone.reason, alone.metrics)
    else:
        assert gate.all_idle
        assert gate.open is (settings.idle is IdlePolicy.CLOCK)


def test_every_function_idle_steps_by_the_clock_or_pauses_once_the_hold_is_over() -> None:
    both = {"place-order": IDLE, "notify-user": IDLE}
    assert evidence_gate(both, CLOCK).open
    continuing = AnalysisSettings(inconclusive=InconclusivePolicy.CONTINUE)
    assert evidence_gate(both, continuing).open, "the owner's opt-out opens it too"
    shut = evidence_gate(both, SETTINGS)
    assert not shut.open
    assert shut.idle == ("place-order", "notify-user")
    why = stalled(shut, SETTINGS, waited=0, elapsed=60, canary_requests={}, stable_requests={})
    assert why is not None
    assert why.startswith(
        "not enough evidence to judge the canary: no data: no changed function (place-order,"
        " notify-user) has served a call in either channel since traffic started"
    )


def test_idle_settings_parse_and_are_written_out() -> None:
    assert AnalysisSettings.parse({"idle": "clock"}).idle is IdlePolicy.CLOCK
    assert AnalysisSettings.parse({}).idle is IdlePolicy.PAUSE
    assert AnalysisSettings.parse(CLOCK.to_dict()) == CLOCK
    with pytest.raises(InvalidInput, match="idle 'skip' must be 'pause'"):
        AnalysisSettings.parse({"idle": "skip"})
