"""The release state machine: a pure, table-tested `transition()`.

The controller persists a release's `Progress` and feeds it events (a clock
tick, a hook's result, an operator's command, a judge's verdict, an alarm);
`transition` returns the next `Progress`, what the controller must do next,
and the audit event to record, or ``None`` when there is nothing to do. All
timing is in the data (``next_action_at``), so a controller that restarts
continues exactly where the store says it was: one step per transition,
never skipping and never repeating one.

A release whose analysis judges it is *gated*: a step whose hold is over
advances only on a tick that says the judge has the evidence it needs
(`Tick.evidence`, DESIGN rule 8); until then the release stays where it is,
due, and the controller keeps asking (it pauses a release whose evidence
cannot come in time, with the reason).

Phases::

    pending --(before hook passes | none)--> running --(each step's hold)--> ...
    ... last step's hold --> promoting --(after hook passes | none)--> promoted
    running <--> paused             any active phase --> rolling_back --> rolled_back
    promoting --> paused (on the last step) --> running --> promoting
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from coalmine.core.bucketing import BUCKETS
from coalmine.core.errors import CoalmineError
from coalmine.core.model import ACTIVE_PHASES, Phase
from coalmine.core.strategy import Strategy

__all__ = [
    "Command",
    "EventKind",
    "Hook",
    "HookResult",
    "InvalidTransition",
    "Operator",
    "Progress",
    "Tick",
    "Transition",
    "start_progress",
    "transition",
]


class Hook(StrEnum):
    BEFORE_ALLOW_TRAFFIC = "before_allow_traffic"
    AFTER_ALLOW_TRAFFIC = "after_allow_traffic"


class Command(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    PROMOTE = "promote"
    ROLLBACK = "rollback"


class EventKind(StrEnum):
    CREATED = "created"
    HOOK_STARTED = "hook_started"
    HOOK_PASSED = "hook_passed"
    HOOK_FAILED = "hook_failed"
    STARTED = "started"
    STEP = "step"
    PAUSED = "paused"
    RESUMED = "resumed"
    PROMOTING = "promoting"
    PROMOTED = "promoted"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    ANALYSIS = "analysis"
    ALARM = "alarm"


class InvalidTransition(CoalmineError):
    """An operator command that the release's phase does not allow."""


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a release is in its rollout: what the store persists."""

    phase: Phase
    step: int
    """index of the strategy step in force; -1 before any traffic"""
    exposure: int
    next_action_at: float | None
    """when the controller must act next (Unix seconds); None: only on an event"""
    paused_remaining: float | None = None
    """the hold left on the current step when paused"""
    reason: str | None = None
    """why the release ended (rollback reason) or is paused"""


@dataclass(frozen=True, slots=True)
class Tick:
    now: float
    evidence: bool = True
    """whether the judge has the evidence a gated release's step waits for"""


@dataclass(frozen=True, slots=True)
class HookResult:
    hook: Hook
    passed: bool
    now: float
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Operator:
    """An operator's (or the judge's / an alarm's) command."""

    command: Command
    now: float
    reason: str = ""


Event = Tick | HookResult | Operator


@dataclass(frozen=True, slots=True)
class Transition:
    progress: Progress
    kind: EventKind
    message: str
    run_hook: Hook | None = None
    """a hook the controller must run now and report back with `HookResult`"""


def start_progress(now: float) -> Progress:
    """The progress of a newly created release: pending, due at once."""
    return Progress(Phase.PENDING, -1, 0, now)


def _pct(bp: int) -> str:
    return f"{bp / 100:g}%"


def _enter_step(strategy: Strategy, p: Progress, index: int, now: float) -> Transition:
    step = strategy.steps[index]
    nxt = replace(
        p,
        phase=Phase.RUNNING,
        step=index,
        exposure=step.exposure,
        next_action_at=now + step.hold,
        paused_remaining=None,
        reason=None,
    )
    total = len(strategy.steps)
    if index == 0:
        return Transition(
            nxt, EventKind.STARTED, f"traffic shifted to {_pct(step.exposure)} (step 1 of {total})"
        )
    return Transition(
        nxt,
        EventKind.STEP,
        f"exposure {_pct(p.exposure)} -> {_pct(step.exposure)} (step {index + 1} of {total})",
    )


def _promoting(p: Progress, now: float, why: str) -> Transition:
    nxt = replace(
        p, phase=Phase.PROMOTING, exposure=BUCKETS, next_action_at=now, paused_remaining=None
    )
    return Transition(nxt, EventKind.PROMOTING, why)


def _rolling_back(p: Progress, now: float, reason: str) -> Transition:
    nxt = replace(
        p, phase=Phase.ROLLING_BACK, next_action_at=now, paused_remaining=None, reason=reason
    )
    return Transition(nxt, EventKind.ROLLING_BACK, f"rolling back: {reason}")


def transition(
    strategy: Strategy,
    hooks: frozenset[Hook],
    progress: Progress,
    event: Event,
    *,
    hook_deadline: float = 300.0,
    gated: bool = False,
) -> Transition | None:
    """The next state for ``event``, or None when there is nothing to do.

    ``gated``: the release is judged, so a running step whose hold is over
    advances only on a `Tick` with ``evidence`` (never by the clock alone).

    While a hook runs, ``next_action_at`` is set ``hook_deadline`` seconds
    ahead: a controller that dies mid-hook runs it again after that (hooks
    are at-least-once). Raises `InvalidTransition` for an operator command
    the phase does not allow; ticks and hook results never raise.
    """
    p = progress
    if isinstance(event, Operator):
        return _command(strategy, p, event)
    if isinstance(event, HookResult):
        return _hook_result(strategy, p, event)
    now = event.now
    if p.phase not in ACTIVE_PHASES and p.phase is not Phase.ROLLING_BACK:
        return None
    if p.phase is Phase.PAUSED or p.next_action_at is None or now < p.next_action_at:
        return None
    if p.phase is Phase.PENDING:
        if Hook.BEFORE_ALLOW_TRAFFIC in hooks:
            return Transition(
                replace(p, next_action_at=now + hook_deadline),
                EventKind.HOOK_STARTED,
                "running before_allow_traffic hook",
                run_hook=Hook.BEFORE_ALLOW_TRAFFIC,
            )
        return _enter_step(strategy, p, 0, now)
    if p.phase is Phase.RUNNING:
        if gated and not event.evidence:
            return None  # the hold is over, the evidence is not in: wait for it
        if p.step + 1 < len(strategy.steps):
            return _enter_step(strategy, p, p.step + 1, now)
        return _promoting(p, now, "all steps done: promoting")
    if p.phase is Phase.PROMOTING:
        if Hook.AFTER_ALLOW_TRAFFIC in hooks:
            return Transition(
                replace(p, next_action_at=now + hook_deadline),
                EventKind.HOOK_STARTED,
                "running after_allow_traffic hook",
                run_hook=Hook.AFTER_ALLOW_TRAFFIC,
            )
        return _promoted(p)
    # rolling back: the data plane has been told; the rollback is complete.
    return Transition(
        replace(p, phase=Phase.ROLLED_BACK, exposure=0, next_action_at=None),
        EventKind.ROLLED_BACK,
        f"rolled back: {p.reason}" if p.reason else "rolled back",
    )


def _promoted(p: Progress) -> Transition:
    return Transition(
        replace(p, phase=Phase.PROMOTED, exposure=BUCKETS, next_action_at=None),
        EventKind.PROMOTED,
        "promoted: the candidate versions are now stable",
    )


def _hook_result(strategy: Strategy, p: Progress, event: HookResult) -> Transition | None:
    expected = {
        Phase.PENDING: Hook.BEFORE_ALLOW_TRAFFIC,
        Phase.PROMOTING: Hook.AFTER_ALLOW_TRAFFIC,
    }.get(p.phase)
    if expected is not event.hook:
        return None  # a stale result: the release moved on while the hook ran
    if not event.passed:
        detail = f": {event.detail}" if event.detail else ""
        return _rolling_back(p, event.now, f"{event.hook} hook failed{detail}")
    if p.phase is Phase.PENDING:
        return _enter_step(strategy, p, 0, event.now)
    return _promoted(p)


def _command(strategy: Strategy, p: Progress, event: Operator) -> Transition:
    cmd, now, reason = event.command, event.now, event.reason
    phase = p.phase
    if cmd is Command.ROLLBACK:
        if phase not in ACTIVE_PHASES:
            raise InvalidTransition(f"cannot roll back a release that is {phase}")
        return _rolling_back(p, now, reason or "rolled back by an operator")
    if cmd is Command.PROMOTE:
        if phase not in (Phase.PENDING, Phase.RUNNING, Phase.PAUSED):
            raise InvalidTransition(f"cannot promote a release that is {phase}")
        why = f"promoted by an operator: {reason}" if reason else "promoted by an operator"
        return _promoting(p, now, why)
    if cmd is Command.PAUSE:
        if phase is Phase.PROMOTING:
            # parked on the last step (100%) with no hold left: resuming promotes again,
            # so a promotion that could not be finished (a Lambda alias that would not
            # move) is tried anew, its after_allow_traffic hook included
            step, remaining = len(strategy.steps) - 1, 0.0
        elif phase is Phase.RUNNING:
            step, remaining = p.step, max(0.0, (p.next_action_at or now) - now)
        else:
            raise InvalidTransition(
                f"cannot pause a release that is {phase}; only a running or promoting one"
            )
        nxt = replace(
            p,
            phase=Phase.PAUSED,
            step=step,
            next_action_at=None,
            paused_remaining=remaining,
            reason=reason or None,
        )
        return Transition(nxt, EventKind.PAUSED, f"paused: {reason}" if reason else "paused")
    if phase is not Phase.PAUSED:
        raise InvalidTransition(f"cannot resume a release that is {phase}; only a paused one")
    remaining = p.paused_remaining or 0.0
    nxt = replace(
        p, phase=Phase.RUNNING, next_action_at=now + remaining, paused_remaining=None, reason=None
    )
    return Transition(
        nxt, EventKind.RESUMED, f"resumed at {_pct(p.exposure)}; next step in {remaining:.0f}s"
    )
