"""The release state machine: a table over every phase and event, walks, and properties."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalmine.core.bucketing import BUCKETS
from coalmine.core.machine import (
    Command,
    Event,
    EventKind,
    Hook,
    HookResult,
    InvalidTransition,
    Operator,
    Progress,
    Tick,
    start_progress,
    transition,
)
from coalmine.core.model import Phase
from coalmine.core.strategy import PRESETS, Step, Strategy, parse_strategy

S = parse_strategy("10%:1m, 50%:2m, 100%")
"""three steps: 10% for 60 s, 50% for 120 s, 100%"""
NO_HOOKS: frozenset[Hook] = frozenset()
BEFORE, AFTER = Hook.BEFORE_ALLOW_TRAFFIC, Hook.AFTER_ALLOW_TRAFFIC
DUE = 100.0

# one release in each phase; every timer is due at DUE
PENDING = Progress(Phase.PENDING, -1, 0, DUE)
RUNNING = Progress(Phase.RUNNING, 0, 1000, DUE)
LAST_STEP = Progress(Phase.RUNNING, 2, BUCKETS, DUE)
PAUSED = Progress(Phase.PAUSED, 0, 1000, None, paused_remaining=40.0, reason="why")
PROMOTING = Progress(Phase.PROMOTING, 2, BUCKETS, DUE)
PROMOTED = Progress(Phase.PROMOTED, 2, BUCKETS, None)
ROLLING_BACK = Progress(Phase.ROLLING_BACK, 0, 1000, DUE, reason="error rate")
ROLLED_BACK = Progress(Phase.ROLLED_BACK, 0, 0, None, reason="error rate")
FAILED = Progress(Phase.FAILED, 0, 0, None, reason="broken")
EVERY_PHASE = {
    "pending": PENDING,
    "running": RUNNING,
    "last_step": LAST_STEP,
    "paused": PAUSED,
    "promoting": PROMOTING,
    "promoted": PROMOTED,
    "rolling_back": ROLLING_BACK,
    "rolled_back": ROLLED_BACK,
    "failed": FAILED,
}


@dataclass(frozen=True)
class Goes:
    """The expected transition."""

    progress: Progress
    kind: EventKind
    message: str
    run_hook: Hook | None = None


@dataclass(frozen=True)
class Raises:
    message: str


Expected = Goes | Raises | None


def _case(
    name: str, p: Progress, event: Event, expected: Expected, hooks: frozenset[Hook] = NO_HOOKS
) -> object:
    return pytest.param(p, hooks, event, expected, id=name)


TICKS = [
    _case("pending-before-due", PENDING, Tick(DUE - 0.1), None),
    _case(
        "pending-due",
        PENDING,
        Tick(DUE),
        Goes(
            Progress(Phase.RUNNING, 0, 1000, DUE + 60),
            EventKind.STARTED,
            "traffic shifted to 10% (step 1 of 3)",
        ),
    ),
    _case(
        "pending-due-with-before-hook",
        PENDING,
        Tick(DUE),
        Goes(
            Progress(Phase.PENDING, -1, 0, DUE + 300),
            EventKind.HOOK_STARTED,
            "running before_allow_traffic hook",
            BEFORE,
        ),
        frozenset({BEFORE}),
    ),
    _case("running-before-due", RUNNING, Tick(DUE - 0.1), None),
    _case(
        "running-due",
        RUNNING,
        Tick(DUE),
        Goes(
            Progress(Phase.RUNNING, 1, 5000, DUE + 120),
            EventKind.STEP,
            "exposure 10% -> 50% (step 2 of 3)",
        ),
    ),
    _case(
        "running-late-tick-holds-from-now",
        RUNNING,
        Tick(DUE + 30),
        Goes(
            Progress(Phase.RUNNING, 1, 5000, DUE + 150),
            EventKind.STEP,
            "exposure 10% -> 50% (step 2 of 3)",
        ),
    ),
    _case("last-step-before-due", LAST_STEP, Tick(DUE - 0.1), None),
    _case(
        "last-step-due",
        LAST_STEP,
        Tick(DUE),
        Goes(
            Progress(Phase.PROMOTING, 2, BUCKETS, DUE),
            EventKind.PROMOTING,
            "all steps done: promoting",
        ),
    ),
    _case("paused-never-ticks", PAUSED, Tick(1e12), None),
    _case("promoting-before-due", PROMOTING, Tick(DUE - 0.1), None),
    _case(
        "promoting-due",
        PROMOTING,
        Tick(DUE),
        Goes(
            Progress(Phase.PROMOTED, 2, BUCKETS, None),
            EventKind.PROMOTED,
            "promoted: the candidate versions are now stable",
        ),
    ),
    _case(
        "promoting-due-with-after-hook",
        PROMOTING,
        Tick(DUE),
        Goes(
            Progress(Phase.PROMOTING, 2, BUCKETS, DUE + 300),
            EventKind.HOOK_STARTED,
            "running after_allow_traffic hook",
            AFTER,
        ),
        frozenset({AFTER}),
    ),
    _case("rolling-back-before-due", ROLLING_BACK, Tick(DUE - 0.1), None),
    _case(
        "rolling-back-due",
        ROLLING_BACK,
        Tick(DUE),
        Goes(
            Progress(Phase.ROLLED_BACK, 0, 0, None, reason="error rate"),
            EventKind.ROLLED_BACK,
            "rolled back: error rate",
        ),
    ),
    *[
        _case(f"{name}-never-ticks", p, Tick(1e12), None, frozenset(Hook))
        for name, p in [("promoted", PROMOTED), ("rolled-back", ROLLED_BACK), ("failed", FAILED)]
    ],
]

HOOK_RESULTS = [
    _case(
        "pending-before-passes",
        PENDING,
        HookResult(BEFORE, True, DUE + 5),
        Goes(
            Progress(Phase.RUNNING, 0, 1000, DUE + 65),
            EventKind.STARTED,
            "traffic shifted to 10% (step 1 of 3)",
        ),
        frozenset({BEFORE}),
    ),
    _case(
        "pending-before-fails",
        PENDING,
        HookResult(BEFORE, False, DUE + 5, "answered 500"),
        Goes(
            Progress(
                Phase.ROLLING_BACK,
                -1,
                0,
                DUE + 5,
                reason="before_allow_traffic hook failed: answered 500",
            ),
            EventKind.ROLLING_BACK,
            "rolling back: before_allow_traffic hook failed: answered 500",
        ),
        frozenset({BEFORE}),
    ),
    _case(
        "pending-before-fails-without-detail",
        PENDING,
        HookResult(BEFORE, False, DUE),
        Goes(
            Progress(Phase.ROLLING_BACK, -1, 0, DUE, reason="before_allow_traffic hook failed"),
            EventKind.ROLLING_BACK,
            "rolling back: before_allow_traffic hook failed",
        ),
        frozenset({BEFORE}),
    ),
    _case(
        "promoting-after-passes",
        PROMOTING,
        HookResult(AFTER, True, DUE),
        Goes(
            Progress(Phase.PROMOTED, 2, BUCKETS, None),
            EventKind.PROMOTED,
            "promoted: the candidate versions are now stable",
        ),
        frozenset({AFTER}),
    ),
    _case(
        "promoting-after-fails",
        PROMOTING,
        HookResult(AFTER, False, DUE, "timed out"),
        Goes(
            Progress(
                Phase.ROLLING_BACK,
                2,
                BUCKETS,
                DUE,
                reason="after_allow_traffic hook failed: timed out",
            ),
            EventKind.ROLLING_BACK,
            "rolling back: after_allow_traffic hook failed: timed out",
        ),
        frozenset({AFTER}),
    ),
    # stale results (the release moved on while the hook ran) change nothing,
    # a failing one included
    *[
        _case(f"{name}-stale-{hook}-{'pass' if ok else 'fail'}", p, HookResult(hook, ok, DUE), None)
        for name, p, hook in [
            ("pending", PENDING, AFTER),
            ("running", RUNNING, BEFORE),
            ("running", RUNNING, AFTER),
            ("paused", PAUSED, BEFORE),
            ("promoting", PROMOTING, BEFORE),
            ("promoted", PROMOTED, AFTER),
            ("rolling-back", ROLLING_BACK, BEFORE),
            ("rolled-back", ROLLED_BACK, BEFORE),
            ("failed", FAILED, AFTER),
        ]
        for ok in (True, False)
    ],
]

NOW = 130.0
ALLOWED: dict[tuple[str, Command], Goes] = {}
for _name, _p in [("pending", PENDING), ("running", RUNNING), ("paused", PAUSED)]:
    ALLOWED[_name, Command.PROMOTE] = Goes(
        Progress(Phase.PROMOTING, _p.step, BUCKETS, NOW, reason=_p.reason),
        EventKind.PROMOTING,
        "promoted by an operator: looks good",
    )
for _name, _p in [
    ("pending", PENDING),
    ("running", RUNNING),
    ("paused", PAUSED),
    ("promoting", PROMOTING),
]:
    ALLOWED[_name, Command.ROLLBACK] = Goes(
        Progress(Phase.ROLLING_BACK, _p.step, _p.exposure, NOW, reason="looks good"),
        EventKind.ROLLING_BACK,
        "rolling back: looks good",
    )
ALLOWED["running", Command.PAUSE] = Goes(
    Progress(Phase.PAUSED, 0, 1000, None, paused_remaining=0.0, reason="looks good"),
    EventKind.PAUSED,
    "paused: looks good",
)
# paused while promoting (a Lambda alias that would not move): parked on the last step,
# with nothing left of its hold, so that resuming promotes again
ALLOWED["promoting", Command.PAUSE] = Goes(
    Progress(Phase.PAUSED, 2, BUCKETS, None, paused_remaining=0.0, reason="looks good"),
    EventKind.PAUSED,
    "paused: looks good",
)
ALLOWED["paused", Command.RESUME] = Goes(
    Progress(Phase.RUNNING, 0, 1000, NOW + 40),
    EventKind.RESUMED,
    "resumed at 10%; next step in 40s",
)
FORBIDDEN = {
    Command.PROMOTE: "cannot promote a release that is {}",
    Command.ROLLBACK: "cannot roll back a release that is {}",
    Command.PAUSE: "cannot pause a release that is {}; only a running or promoting one",
    Command.RESUME: "cannot resume a release that is {}; only a paused one",
}
OPERATORS = [
    _case(
        f"{name}-{cmd}",
        p,
        Operator(cmd, NOW, "looks good"),
        ALLOWED.get((name, cmd)) or Raises(FORBIDDEN[cmd].format(p.phase)),
    )
    for name, p in EVERY_PHASE.items()
    if name != "last_step"
    for cmd in Command
]


@pytest.mark.parametrize(
    ("progress", "hooks", "event", "expected"), TICKS + HOOK_RESULTS + OPERATORS
)
def test_transition_table(
    progress: Progress, hooks: frozenset[Hook], event: Event, expected: Expected
) -> None:
    if isinstance(expected, Raises):
        with pytest.raises(InvalidTransition) as info:
            transition(S, hooks, progress, event)
        assert str(info.value) == expected.message
        return
    t = transition(S, hooks, progress, event)
    if expected is None:
        assert t is None
        return
    assert t is not None
    assert t.progress == expected.progress
    assert (t.kind, t.message, t.run_hook) == (expected.kind, expected.message, expected.run_hook)


def test_the_table_covers_every_phase_and_command() -> None:
    phases = {p.values[0].phase for p in TICKS + HOOK_RESULTS + OPERATORS}  # type: ignore[attr-defined]
    assert phases == set(Phase)
    commands = {p.values[2].command for p in OPERATORS}  # type: ignore[attr-defined]
    assert commands == set(Command)


def test_default_reasons_of_operator_commands() -> None:
    t = transition(S, NO_HOOKS, RUNNING, Operator(Command.ROLLBACK, NOW))
    assert t is not None
    assert t.progress.reason == "rolled back by an operator"
    t = transition(S, NO_HOOKS, RUNNING, Operator(Command.PROMOTE, NOW))
    assert t is not None
    assert t.message == "promoted by an operator"
    t = transition(S, NO_HOOKS, RUNNING, Operator(Command.PAUSE, NOW))
    assert t is not None
    assert (t.message, t.progress.reason) == ("paused", None)


def _walk(strategy: Strategy, hooks: frozenset[Hook], until: float) -> list[tuple[float, Progress]]:
    """Tick every second from 0 to ``until``; each (time, progress) after a transition."""
    p = start_progress(0.0)
    out = []
    now = 0.0
    while now <= until:
        t = transition(strategy, hooks, p, Tick(now))
        if t is None:
            now += 1.0
            continue
        assert t.run_hook is None
        p = t.progress
        out.append((now, p))
    return out


def test_a_codedeploy_linear_preset_walks_to_promoted() -> None:
    strategy = parse_strategy("Linear10PercentEvery1Minute")
    assert strategy.steps == PRESETS["Linear10PercentEvery1Minute"]
    walk = _walk(strategy, NO_HOOKS, 3600)
    running = [(now, p.exposure) for now, p in walk if p.phase is Phase.RUNNING]
    assert running == [(60.0 * i, 1000 * (i + 1)) for i in range(10)]
    assert [(now, p.phase) for now, p in walk[-2:]] == [
        (540.0, Phase.PROMOTING),
        (540.0, Phase.PROMOTED),
    ]
    assert len(walk) == 12


def test_pause_and_resume_keep_the_remaining_hold() -> None:
    t = transition(
        S, NO_HOOKS, Progress(Phase.RUNNING, 0, 1000, 160.0), Operator(Command.PAUSE, 120)
    )
    assert t is not None
    assert t.progress.paused_remaining == 40.0
    assert transition(S, NO_HOOKS, t.progress, Tick(10_000)) is None
    t = transition(S, NO_HOOKS, t.progress, Operator(Command.RESUME, 1000))
    assert t is not None
    assert t.progress.next_action_at == 1040.0
    assert transition(S, NO_HOOKS, t.progress, Tick(1039.9)) is None
    t = transition(S, NO_HOOKS, t.progress, Tick(1040))
    assert t is not None
    assert (t.progress.step, t.progress.exposure) == (1, 5000)


def test_a_release_paused_while_promoting_promotes_again_on_resume() -> None:
    """Promoted by an operator from the first step, paused while its after hook ran:
    resuming goes back to the last step (100%), and the next tick promotes again."""
    hooks = frozenset({AFTER})
    promoting = transition(S, hooks, RUNNING, Operator(Command.PROMOTE, 100))
    assert promoting is not None
    hook = transition(S, hooks, promoting.progress, Tick(100), hook_deadline=60)
    assert hook is not None
    assert hook.run_hook is AFTER
    paused = transition(S, hooks, hook.progress, Operator(Command.PAUSE, 110, "alias"))
    assert paused is not None
    assert (paused.progress.phase, paused.progress.step, paused.progress.exposure) == (
        Phase.PAUSED,
        2,
        BUCKETS,
    )
    assert transition(S, hooks, paused.progress, HookResult(AFTER, True, 111)) is None, "stale"
    resumed = transition(S, hooks, paused.progress, Operator(Command.RESUME, 200))
    assert resumed is not None
    assert (resumed.progress.phase, resumed.progress.next_action_at) == (Phase.RUNNING, 200)
    again = transition(S, hooks, resumed.progress, Tick(200))
    assert again is not None
    assert again.kind is EventKind.PROMOTING


def test_a_hook_is_requested_again_after_its_deadline() -> None:
    """A controller that died while a hook ran: the hook runs again (at-least-once)."""
    hooks = frozenset({BEFORE})
    t = transition(S, hooks, PENDING, Tick(DUE), hook_deadline=60)
    assert t is not None
    assert (t.run_hook, t.progress.next_action_at) == (BEFORE, DUE + 60)
    assert transition(S, hooks, t.progress, Tick(DUE + 59.9), hook_deadline=60) is None
    again = transition(S, hooks, t.progress, Tick(DUE + 60), hook_deadline=60)
    assert again is not None
    assert again.run_hook is BEFORE
    assert again.kind is EventKind.HOOK_STARTED
    assert again.progress.next_action_at == DUE + 120
    done = transition(S, hooks, again.progress, HookResult(BEFORE, True, DUE + 61))
    assert done is not None
    assert done.progress.phase is Phase.RUNNING


def test_a_judged_step_waits_for_the_evidence_not_the_clock() -> None:
    """DESIGN rule 8: once its hold is over, a judged release's step advances only on a
    tick that says the judge has its evidence; the clock alone never promotes it."""
    for p, nxt in ((RUNNING, Phase.RUNNING), (LAST_STEP, Phase.PROMOTING)):
        assert transition(S, NO_HOOKS, p, Tick(DUE + 3600, evidence=False), gated=True) is None
        t = transition(S, NO_HOOKS, p, Tick(DUE + 3600, evidence=True), gated=True)
        assert t is not None
        assert t.progress.phase is nxt
        # a release nobody judges goes by the clock, whatever the tick says
        ungated = transition(S, NO_HOOKS, p, Tick(DUE, evidence=False))
        assert ungated is not None
        assert ungated.progress.phase is nxt
    # before the hold is over, evidence changes nothing; the first step needs none
    assert transition(S, NO_HOOKS, RUNNING, Tick(DUE - 1, evidence=True), gated=True) is None
    first = transition(S, NO_HOOKS, PENDING, Tick(DUE, evidence=False), gated=True)
    assert first is not None
    assert first.kind is EventKind.STARTED
    # operators still promote, pause and roll back a waiting release at will
    promoted = transition(S, NO_HOOKS, RUNNING, Operator(Command.PROMOTE, DUE + 1), gated=True)
    assert promoted is not None
    assert promoted.progress.phase is Phase.PROMOTING


# -- properties ----------------------------------------------------------------------


@st.composite
def strategies(draw: st.DrawFn) -> Strategy:
    exposures = [*sorted(draw(st.sets(st.integers(1, BUCKETS - 1), max_size=8))), BUCKETS]
    holds = draw(
        st.lists(
            st.sampled_from([0.0, 1.0, 5.0, 60.0, 3600.0]),
            min_size=len(exposures),
            max_size=len(exposures),
        )
    )
    return Strategy("random", tuple(Step(e, h) for e, h in zip(exposures, holds, strict=True)))


events = st.one_of(
    st.tuples(st.just("tick")),
    st.tuples(st.just("hook"), st.sampled_from(list(Hook)), st.booleans()),
    st.tuples(st.just("op"), st.sampled_from(list(Command))),
)
ACTIVE_OR_DONE = {Phase.RUNNING, Phase.PAUSED, Phase.PROMOTING, Phase.PROMOTED}


@settings(max_examples=300, deadline=None)
@given(
    strategy=strategies(),
    hooks=st.frozensets(st.sampled_from(list(Hook))),
    script=st.lists(st.tuples(st.sampled_from([0.0, 0.5, 1.0, 60.0, 400.0]), events), max_size=60),
)
def test_any_event_sequence_keeps_the_invariants(
    strategy: Strategy, hooks: frozenset[Hook], script: list[tuple[float, tuple[object, ...]]]
) -> None:
    p = start_progress(0.0)
    now = 0.0
    for delta, ev in script:
        now += delta
        event: Event
        if ev[0] == "tick":
            event = Tick(now)
        elif ev[0] == "hook":
            event = HookResult(ev[1], ev[2], now, "detail")  # type: ignore[arg-type]
        else:
            event = Operator(ev[1], now)  # type: ignore[arg-type]
        try:
            t = transition(strategy, hooks, p, event, hook_deadline=30)
        except InvalidTransition:
            continue
        if t is None:
            continue
        nxt = t.progress
        assert p.phase is not Phase.ROLLED_BACK, "a rolled-back release never changes"
        assert p.phase is not Phase.PROMOTED, "a promoted release never changes"
        if not (p.phase is Phase.PROMOTING and nxt.phase is Phase.PAUSED):
            assert 0 <= nxt.step - p.step <= 1, "one step at most per transition"
        else:
            assert nxt.step == len(strategy.steps) - 1, "paused while promoting: on the last step"
        if nxt.phase in ACTIVE_OR_DONE:
            assert nxt.exposure >= p.exposure, "exposure only grows while a release goes on"
        if nxt.phase in (Phase.RUNNING, Phase.PAUSED):
            assert nxt.exposure == strategy.steps[nxt.step].exposure
        if nxt.phase is Phase.ROLLED_BACK:
            assert nxt.exposure == 0
        assert t.run_hook is None or t.run_hook in hooks
        p = nxt
