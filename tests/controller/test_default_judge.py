"""The judge on by default, the off switch, and a function nobody calls, in the real
controller over the real store (SQLite and PostgreSQL) with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given

from coalmine.controller.analysis import combine
from coalmine.controller.analysis_settings import DEFAULT_ANALYSIS, release_analysis
from coalmine.controller.plane import ControlPlane
from coalmine.controller.schemas import ReleaseCreate, ReleaseSettings
from coalmine.core.analysis import IdlePolicy
from coalmine.core.errors import InvalidInput
from coalmine.core.judge import judge
from coalmine.core.verdict import Verdict
from tests.controller import FakeClock
from tests.controller.test_analysis import HEALTHY, controller, feed, interval, start
from tests.core.test_idle import IDLE, SETTINGS, traffic, verdicts

NO_CALLS = "no data: no changed function (cart) has served a call in either channel"


def test_a_release_without_settings_is_judged_with_the_defaults(svc: ControlPlane) -> None:
    release = start(svc, analysis={})
    assert release.analysis == DEFAULT_ANALYSIS
    spec = release_analysis(release.analysis)
    assert spec is not None
    assert spec.settings.idle is IdlePolicy.CLOCK
    assert spec.settings.interval == 30.0
    assert spec.settings.metric_names == (
        "error_rate",
        "latency_p50",
        "latency_p95",
        "latency_p99",
    )


def test_enabled_false_turns_it_off_and_is_checked(svc: ControlPlane) -> None:
    assert release_analysis({"enabled": False}) is None
    assert release_analysis({"enabled": True, "interval": "1m"}) is not None
    with pytest.raises(InvalidInput, match="enabled is false but interval given"):
        start(svc, analysis={"enabled": False, "interval": "1m"})
    with pytest.raises(InvalidInput, match="enabled 'no' must be true or false"):
        start(svc, analysis={"enabled": "no"})


def test_by_default_a_release_nobody_calls_steps_by_the_clock_and_says_so(
    svc: ControlPlane, clock: FakeClock
) -> None:
    release = start(svc, analysis={}, strategy="10%:1m, 100%")
    ctl = controller(svc, clock)
    ctl.tick()
    for _ in range(12):
        clock.advance(10.0)
        ctl.tick()
    done = svc.releases.get(release.id)
    assert done.phase == "promoted"
    runs = svc.runs.of_release(release.id)
    assert runs, "analysed all along"
    assert all(r.results["evidence"]["idle"] == ["cart"] for r in runs)
    messages = [e.message for e in svc.audit.events(release_id=release.id) if e.kind == "analysis"]
    assert messages[0].startswith(f"not judged: {NO_CALLS}")
    assert messages[0].endswith("the steps go by the strategy's clock")


def test_written_settings_pause_a_release_nobody_calls_once_the_hold_is_over(
    svc: ControlPlane, clock: FakeClock
) -> None:
    release = start(svc, analysis={"interval": "10s"}, strategy="10%:20s, 100%")
    ctl = controller(svc, clock)
    ctl.tick()
    for _ in range(3):
        clock.advance(10.0)
        ctl.tick()
    paused = svc.releases.get(release.id)
    assert paused.phase == "paused"
    assert paused.reason is not None
    assert NO_CALLS in paused.reason


def test_a_function_nobody_calls_does_not_hold_the_release(
    svc: ControlPlane, clock: FakeClock
) -> None:
    release = start(
        svc,
        candidate={"cart": "v2", "pay": "v2"},
        strategy="50%:20s, 100%",
        analysis={"interval": "10s", "min_requests": 100},
    )
    ctl = controller(svc, clock)
    ctl.tick()
    for _ in range(20):
        interval(svc, clock, ctl, HEALTHY)  # cart only
        if svc.releases.get(release.id).phase == "promoted":
            break
    assert svc.releases.get(release.id).phase == "promoted"
    last = svc.runs.of_release(release.id)[-1]
    assert last.results["functions"]["pay"]["idle"] is True
    assert last.results["evidence"]["idle"] == ["pay"]
    assert any(
        n.startswith("pay: not judged: no call in either channel") for n in last.results["notes"]
    )


def test_a_canary_with_calls_while_stable_has_none_is_judged_and_holds(
    svc: ControlPlane, clock: FakeClock
) -> None:
    release = start(
        svc,
        candidate={"cart": "v2", "pay": "v2"},
        strategy="50%:20s, 100%",
        analysis={"interval": "10s", "min_requests": 100},
    )
    ctl = controller(svc, clock)
    ctl.tick()
    for _ in range(4):
        feed(svc, clock.now, HEALTHY, (0, 0, 10.0), fn="pay")
        interval(svc, clock, ctl, HEALTHY)
    got = svc.releases.get(release.id)
    assert got.phase == "paused", "pay's canary cannot be compared: the release may not go on"
    assert got.reason is not None
    assert "pay stable serves no traffic" in got.reason
    assert svc.runs.of_release(release.id)[-1].results["functions"]["pay"]["idle"] is False


def test_combine_names_the_idle_function_and_judges_the_rest() -> None:
    busy = judge(traffic("canary", 5000, 50), traffic("stable", 45000, 450), SETTINGS)
    both = combine({"cart": busy, "pay": IDLE})
    assert both.outcome is busy.outcome
    assert not both.idle
    assert "pay: not judged: no call in either channel since traffic started" in both.notes[-1]
    assert not any(r.startswith("pay") for r in both.reasons)
    none = combine({"cart": IDLE})
    assert none.idle
    assert none.waiting
    assert none.outcome.value == "inconclusive"


def test_analysis_off_and_false_are_the_off_switch(svc: ControlPlane) -> None:
    settings = ReleaseSettings.model_validate({"analysis": False})
    assert settings.analysis == {"enabled": False}
    create = ReleaseCreate.model_validate({"candidate": {"cart": "v2"}, "analysis": "off"})
    assert create.analysis == {"enabled": False}
    release = start(svc, analysis=False)  # type: ignore[arg-type]  # YAML's `analysis: off`
    assert release.analysis == {"enabled": False}


@given(verdicts())
def test_an_idle_function_changes_nothing_of_the_verdict_but_a_note(
    given_verdicts: dict[str, Verdict],
) -> None:
    judged = {fn: v for fn, v in given_verdicts.items() if not v.idle}
    with_idle = combine({**given_verdicts, "idle-fn": IDLE})
    if not judged:
        assert with_idle.idle
        assert with_idle.waiting
        return
    alone = combine(judged)
    assert (with_idle.outcome, with_idle.reasons, with_idle.waiting, with_idle.enough) == (
        alone.outcome,
        alone.reasons,
        alone.waiting,
        alone.enough,
    )
    assert with_idle.notes[-1].startswith("idle-fn: not judged")
