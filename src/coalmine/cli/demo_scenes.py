"""The three scenes of `coalmine demo`, played on a running `Stack`, and what each measured.

1. **Request mode** (a weighted alias): v2 of ``place-order`` and
   ``notify-user`` at 10% of requests for a few seconds. Measured: the share
   of active users who met the canary on any function, and the orders whose
   chain mixed v1 and v2 and failed (notify-user v2 on a v1 event).
2. **User mode** (coalmine): the same versions, steps of seconds, the judge
   every second. Measured: the share of users who met the canary while the
   first step (10%) held, the mixed-chain failures, the verdicts, the outcome.
3. **A slower canary**: ``place-order`` v3 (p99 about twice v2's, the median
   unchanged). Measured: the p99 of all traffic against stable's and the
   canary's, the outcome, the seconds from the first canary user to the
   rollback, and the judge's reason.

Each scene reports progress to a `Watcher` (exposure, orders, verdicts as
they come) and returns plain numbers; `coalmine.cli.demo` prints them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from coalmine.cli.demo_stack import Stack
from coalmine.cli.demo_traffic import Placed

__all__ = [
    "JUDGE",
    "Progress",
    "RequestModeResult",
    "SlowCanaryResult",
    "UserModeResult",
    "Watcher",
    "request_mode",
    "slow_canary",
    "user_mode",
]

JUDGE: dict[str, Any] = {
    "interval": "1s",
    "min_requests": 50,
    "failure_limit": 1,
    "max_inconclusive": 30,
    "inconclusive": "continue",
    "max_wait": "75s",
    "power": 0.9,
    # limits a few seconds of a few hundred users can prove or clear; the defaults
    # (+1 pp, +20%) need thousands of canary requests, minutes at this traffic
    "metrics": {
        "error_rate": {"max_increase_pp": 5},
        "latency_p50": {"max_increase_pct": 50},
        "latency_p95": None,
        "latency_p99": {"max_increase_pct": 50},
    },
}
"""the judge of scenes 2 and 3, written out so the demo does not depend on the defaults"""

NO_JUDGE: dict[str, Any] = {
    "interval": "1s",
    "failure_limit": 1000,
    "max_inconclusive": 10_000,
    "inconclusive": "continue",
}
"""scene 1: a weighted alias has no per-version judge; this one never acts in the scene"""

REQUEST_SECONDS = 8.0
USER_STRATEGY = "10%:5s, 50%:3s, 100%"
SLOW_STRATEGY = "10%:75s, 100%"
SCENE_TIMEOUT = 90.0
TERMINAL = {"promoted", "rolled_back", "paused", "failed", "aborted"}


@dataclass(frozen=True)
class Progress:
    """Where a scene is, for the progress display."""

    scene: int
    phase: str
    exposure: int
    orders: int
    users_met_canary: int
    users_active: int
    failures: int
    verdicts: tuple[str, ...]


class Watcher(Protocol):
    def progress(self, p: Progress) -> None: ...

    def event(self, scene: int, text: str) -> None: ...


@dataclass
class RequestModeResult:
    release: str
    exposed_user_fraction: float
    users_active: int
    users_met_canary: int
    orders: int
    mixed_chains: int
    mixed_chain_failures: int
    failure_example: str | None
    ended_at: float = 0.0
    """when its last notification ran (its failures are before this)"""


@dataclass
class UserModeResult:
    release: str
    exposed_user_fraction: float
    users_active_at_10: int
    users_met_canary_at_10: int
    orders: int
    mixed_chains: int
    mixed_chain_failures: int
    outcome: str
    verdicts: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class SlowCanaryResult:
    release: str
    outcome: str
    seconds_to_rollback: float | None
    reason: str
    p99_ms: dict[str, float]
    p50_ms: dict[str, float]
    verdicts: list[str] = field(default_factory=list)


# measuring ---------------------------------------------------------------------------


def _quantile(values: Iterable[float], q: float) -> float:
    xs = sorted(values)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1)))]


class _Tally:
    """Users and chains of the orders answered in a time window."""

    def __init__(self, stack: Stack, start: float, end: float, candidate: dict[str, str]) -> None:
        self.placed: list[Placed] = [p for p in stack.ledger.between(start, end) if p.status]
        self.active = {p.user for p in self.placed}
        met: set[str] = set()
        self.mixed = self.mixed_failures = 0
        self.example: str | None = None
        for p in self.placed:
            n = stack.ledger.notification(p.order)
            canary = p.channel == "canary" or (n is not None and n.channel == "canary")
            if canary:
                met.add(p.user)
            if n is None or n.version is None or p.status != 201 or len(candidate) < 2:
                continue
            if (p.version == candidate.get("place-order")) != (
                n.version == candidate.get("notify-user")
            ):
                self.mixed += 1
                if not n.ok:
                    self.mixed_failures += 1
                    if self.example is None:
                        self.example = (
                            f"order {p.order}: place-order {p.version} -> notify-user"
                            f" {n.version}: {n.error}"
                        )
        self.met = met

    @property
    def fraction(self) -> float:
        return len(self.met) / len(self.active) if self.active else 0.0


def _drain(stack: Stack, since: float, until: float, timeout: float = 15.0) -> None:
    """Wait until every order answered in [since, until) has its notification."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = [
            p
            for p in stack.ledger.between(since, until)
            if p.status == 201 and stack.ledger.notification(p.order) is None
        ]
        if not waiting:
            return
        time.sleep(0.1)


class _Scene:
    """Start a release and follow it, reporting progress and each new event and verdict."""

    def __init__(self, stack: Stack, watcher: Watcher, number: int) -> None:
        self.stack, self.watcher, self.number = stack, watcher, number
        self.service = stack.service
        self.release = ""
        self.candidate: dict[str, str] = {}
        self.verdicts: list[str] = []
        self._last_event = 0
        self._last_run = 0
        self.events: list[Any] = []

    def start(self, candidate: dict[str, str], **settings: Any) -> None:
        from coalmine.controller.schemas import ReleaseCreate

        self.candidate = candidate
        rel = self.service.releases.start(
            self.stack.app, ReleaseCreate(candidate=candidate, **settings), "demo"
        )
        self.release = rel.id

    def at(self, kind: str, exposure: int | None = None) -> float | None:
        for e in self.events:
            if e.kind == kind and (exposure is None or e.exposure == exposure):
                return float(e.at)
        return None

    def poll(self) -> Any:
        rel = self.service.releases.get(self.release)
        # only what is new since the last look: a scene polls twice a second
        events = self.service.audit.events(
            release_id=self.release, after=self._last_event, limit=1000
        )
        for e in events:
            self._last_event = max(self._last_event, e.id)
            self.events.append(e)
            if e.kind != "analysis":
                self.watcher.event(self.number, f"{e.kind}: {e.message}")
        for r in self.service.runs.of_release(self.release, after=self._last_run):
            self._last_run = max(self._last_run, r.id)
            outcome = str(r.outcome)
            self.verdicts.append(outcome)
            reason = str(r.results.get("reason") or "")
            self.watcher.event(
                self.number, f"judge: {outcome}" + (f" ({reason})" if reason else "")
            )
        started = self.at("started") or time.time()
        tally = _Tally(self.stack, started, time.time(), self.candidate)
        self.watcher.progress(
            Progress(
                self.number,
                str(rel.phase),
                rel.exposure,
                len(tally.placed),
                len(tally.met),
                len(tally.active),
                tally.mixed_failures,
                tuple(self.verdicts[-8:]),
            )
        )
        return rel

    def follow(self, done: Callable[[Any], bool], timeout: float = SCENE_TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            rel = self.poll()
            if done(rel) or time.monotonic() > deadline:
                return rel
            time.sleep(0.5)


def _wait_idle(stack: Stack) -> None:
    deadline = time.monotonic() + 20
    while stack.service.releases.active(stack.app) is not None:
        if time.monotonic() > deadline:
            raise RuntimeError("the previous scene's release did not end")
        time.sleep(0.1)


# the scenes -----------------------------------------------------------------------


def request_mode(stack: Stack, watcher: Watcher) -> RequestModeResult:
    """Scene 1: see the module."""
    _wait_idle(stack)
    scene = _Scene(stack, watcher, 1)
    scene.start(
        {"place-order": "v2", "notify-user": "v2"},
        strategy="10%:10m, 100%",
        route_mode="request",
        analysis=NO_JUDGE,
    )
    scene.follow(lambda r: scene.at("started") is not None or str(r.phase) in TERMINAL)
    started = scene.at("started") or time.time()
    scene.follow(lambda r: time.time() - started >= REQUEST_SECONDS or str(r.phase) in TERMINAL)
    end = time.time()
    stack.service.releases.rollback(
        scene.release,
        "demo",
        f"scene 1 is over: {REQUEST_SECONDS:g}s of a weighted alias at 10%",
    )
    scene.follow(lambda r: str(r.phase) in TERMINAL)
    _drain(stack, started, end)
    tally = _Tally(stack, started, end, scene.candidate)
    scene.poll()
    return RequestModeResult(
        scene.release,
        round(tally.fraction, 4),
        len(tally.active),
        len(tally.met),
        len(tally.placed),
        tally.mixed,
        tally.mixed_failures,
        tally.example,
        time.time(),
    )


def _clear_window(watcher: Watcher, scene: int, after: float) -> None:
    """Wait until the metric window holding ``after`` is over.

    The judge reads whole metric windows (10 s, `DEFAULT_WINDOW`) from the one
    holding the release's start: a release of the same versions that starts in
    the window of the previous scene's failures would be judged on them.
    """
    from coalmine.metrics.recorder import DEFAULT_WINDOW, window_start

    wait = window_start(after) + DEFAULT_WINDOW - time.time()
    if wait > 0:
        watcher.event(
            scene,
            f"waiting {wait:.0f}s for the last scene's metric window to close"
            f" (the judge reads whole {DEFAULT_WINDOW:g}s windows)",
        )
        time.sleep(wait)


def user_mode(stack: Stack, watcher: Watcher, previous: float | None = None) -> UserModeResult:
    """Scene 2: see the module. ``previous``: when the last scene's failures ended."""
    _wait_idle(stack)
    if previous is not None:
        _clear_window(watcher, 2, previous)
    scene = _Scene(stack, watcher, 2)
    t0 = time.monotonic()
    scene.start(
        {"place-order": "v2", "notify-user": "v2"},
        strategy=USER_STRATEGY,
        route_mode="user",
        analysis=JUDGE,
    )
    rel = scene.follow(lambda r: str(r.phase) in TERMINAL)
    end = time.time()
    started = scene.at("started") or end
    _drain(stack, started, end)
    scene.poll()
    # the first step ends when the next begins; an answer that came before that event
    # was decided at 10% (the gateway learns of a step after the store has it)
    step_end = scene.at("step", 5000) or end
    first = _Tally(stack, started, step_end, scene.candidate)
    whole = _Tally(stack, started, end, scene.candidate)
    return UserModeResult(
        scene.release,
        round(first.fraction, 4),
        len(first.active),
        len(first.met),
        len(whole.placed),
        whole.mixed,
        whole.mixed_failures,
        str(rel.phase),
        scene.verdicts,
        round(time.monotonic() - t0, 1),
    )


def slow_canary(stack: Stack, watcher: Watcher) -> SlowCanaryResult:
    """Scene 3: see the module."""
    _wait_idle(stack)
    before = time.time()
    time.sleep(2.0)  # stable's p99 with no release, to compare with
    scene = _Scene(stack, watcher, 3)
    scene.start({"place-order": "v3"}, strategy=SLOW_STRATEGY, route_mode="user", analysis=JUDGE)
    rel = scene.follow(lambda r: str(r.phase) in TERMINAL)
    scene.poll()
    started = scene.at("started")
    decided = scene.at("rolling_back") or scene.at("rolled_back") or time.time()
    rolled = scene.at("rolled_back")
    seconds = round(rolled - started, 1) if rolled is not None and started is not None else None
    window = stack.ledger.between(started or decided, decided)
    ok = [p for p in window if p.status == 201]
    baseline = [p for p in stack.ledger.between(before, started or decided) if p.status == 201]
    groups = {
        "before_release": [p.latency_ms for p in baseline],
        "all_traffic": [p.latency_ms for p in ok],
        "stable": [p.latency_ms for p in ok if p.channel == "stable"],
        "canary": [p.latency_ms for p in ok if p.channel == "canary"],
    }
    rolling = [e for e in scene.events if e.kind == "rolling_back"]
    reason = rolling[0].message if rolling else (rel.reason or f"the release ended {rel.phase}")
    return SlowCanaryResult(
        scene.release,
        str(rel.phase),
        seconds,
        reason,
        {k: round(_quantile(v, 0.99), 1) for k, v in groups.items()},
        {k: round(_quantile(v, 0.50), 1) for k, v in groups.items()},
        scene.verdicts,
    )
