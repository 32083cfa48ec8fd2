"""Lifecycle hooks: the HTTP runner against a real local server, and the loop running them."""

from __future__ import annotations

from typing import Any

import pytest

from coalmine.controller.hooks import MAX_BACKOFF, HttpHookRunner, hook_payload
from coalmine.controller.leader import SoleLeadership
from coalmine.controller.loop import Controller
from coalmine.controller.plane import ControlPlane
from coalmine.controller.releases import ReleaseService
from coalmine.controller.schemas import HookSpec
from coalmine.core.errors import Conflict
from coalmine.core.machine import Command, Event, Hook, HookResult, Tick
from coalmine.core.ports import HookOutcome, Transitioned
from coalmine.core.records import HookConfig, ReleaseRecord
from coalmine.store.db import Store
from tests.controller import (
    ACTOR,
    APP,
    FakeClock,
    HttpServer,
    closed_port,
    hook_release,
    release_events,
    start_release,
    tick_through_hooks,
)

BEFORE = Hook.BEFORE_ALLOW_TRAFFIC
AFTER = Hook.AFTER_ALLOW_TRAFFIC


def a_release(**hooks: HookSpec) -> ReleaseRecord:
    return hook_release(**{k: v.config() for k, v in hooks.items()})


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


# -- HttpHookRunner ---------------------------------------------------------------


def test_a_2xx_answer_passes_and_the_payload_says_what_to_check(http_server: HttpServer) -> None:
    url = http_server.route("/check", 204)
    spec = HookSpec(url=url, headers={"authorization": "Bearer s3cret"})
    release = a_release(before_allow_traffic=spec)
    with HttpHookRunner() as runner:
        outcome = runner.run(release, BEFORE, spec.config())
    assert outcome == HookOutcome(True, f"before_allow_traffic hook {url} passed")
    (req,) = http_server.at("/check")
    assert req.headers["authorization"] == "Bearer s3cret"
    assert req.headers["content-type"] == "application/json"
    body: dict[str, Any] = req.body
    assert (body["hook"], body["app"], body["attempt"]) == ("before_allow_traffic", "shop", 1)
    assert body["release"]["id"] == "shop-1"
    assert body["release"]["candidate"] == {"cart": "v2"}
    assert "s3cret" not in str(body), "hook headers (credentials) are not sent in the payload"
    assert body == hook_payload(release, BEFORE, 1)


def test_a_failing_answer_is_retried_then_fails_with_a_readable_detail(
    http_server: HttpServer,
) -> None:
    url = http_server.route("/check", 500, body="database down")
    spec = HookSpec(url=url, retries=2)
    sleeps = Sleeps()
    with HttpHookRunner(backoff=0.25, sleep=sleeps) as runner:
        outcome = runner.run(a_release(), AFTER, spec.config())
    assert not outcome.passed
    assert outcome.detail == (f"after_allow_traffic hook {url} answered 500 after 3 attempts")
    assert [r.body["attempt"] for r in http_server.at("/check")] == [1, 2, 3]
    assert sleeps.calls == [0.25, 0.5]


def test_a_retry_that_passes_passes(http_server: HttpServer) -> None:
    url = http_server.route("/check", 503, 200)
    with HttpHookRunner(sleep=Sleeps()) as runner:
        outcome = runner.run(a_release(), BEFORE, HookSpec(url=url, retries=3).config())
    assert outcome == HookOutcome(True, f"before_allow_traffic hook {url} passed on attempt 2")
    assert len(http_server.at("/check")) == 2


def test_a_timeout_is_a_failed_attempt(http_server: HttpServer) -> None:
    url = http_server.route("/slow", 200, delay=1.0)
    with HttpHookRunner() as runner:
        outcome = runner.run(
            a_release(), BEFORE, HookSpec(url=url, timeout=0.1, retries=0).config()
        )
    assert outcome == HookOutcome(
        False, f"before_allow_traffic hook {url} timed out (0.1s) after 1 attempt"
    )


def test_an_unreachable_hook_fails() -> None:
    url = f"http://127.0.0.1:{closed_port()}/check"
    with HttpHookRunner(sleep=Sleeps()) as runner:
        outcome = runner.run(a_release(), BEFORE, HookSpec(url=url, retries=1).config())
    assert not outcome.passed
    assert outcome.detail.startswith(f"before_allow_traffic hook {url} could not be reached (")
    assert outcome.detail.endswith("after 2 attempts")


def test_backoff_is_exponential_and_capped() -> None:
    runner = HttpHookRunner(backoff=0.25)
    try:
        assert [runner.delay(n) for n in range(1, 7)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
        assert MAX_BACKOFF == 2.0
    finally:
        runner.close()


# -- the loop runs hooks --------------------------------------------------------------


def controller(svc: ControlPlane, clock: FakeClock, runner: Any) -> Controller:
    return Controller(svc, leadership=SoleLeadership(), hooks=runner, clock=clock)


@pytest.mark.parametrize(
    ("hook", "answer", "phase", "kinds", "reason"),
    [
        (
            BEFORE,
            "200",
            "promoted",
            ["hook_started", "started", "step", "promoting", "promoted"],
            None,
        ),
        (
            BEFORE,
            "500",
            "rolled_back",
            ["hook_started", "rolling_back", "rolled_back"],
            "answered 500 after 2 attempts",
        ),
        (
            BEFORE,
            "timeout",
            "rolled_back",
            ["hook_started", "rolling_back", "rolled_back"],
            "timed out (0.1s) after 2 attempts",
        ),
        (
            AFTER,
            "200",
            "promoted",
            ["started", "step", "promoting", "hook_started", "promoted"],
            None,
        ),
        (
            AFTER,
            "500",
            "rolled_back",
            ["started", "step", "promoting", "hook_started", "rolling_back", "rolled_back"],
            "answered 500 after 2 attempts",
        ),
        (
            AFTER,
            "timeout",
            "rolled_back",
            ["started", "step", "promoting", "hook_started", "rolling_back", "rolled_back"],
            "timed out (0.1s) after 2 attempts",
        ),
    ],
    ids=["before-200", "before-500", "before-timeout", "after-200", "after-500", "after-timeout"],
)
def test_a_hook_gates_the_release(
    svc: ControlPlane,
    clock: FakeClock,
    http_server: HttpServer,
    hook: Hook,
    answer: str,
    phase: str,
    kinds: list[str],
    reason: str | None,
) -> None:
    if answer == "timeout":
        url = http_server.route("/hook", 200, delay=0.6)
    else:
        url = http_server.route("/hook", int(answer), body="no")
    spec = HookSpec(url=url, timeout=0.1, retries=1)
    release = start_release(svc, "10%:0s, 100%", {str(hook): spec})
    with HttpHookRunner(backoff=0.01) as runner:
        assert tick_through_hooks(controller(svc, clock, runner)) == len(kinds)
    done = svc.releases.get(release.id)
    assert done.phase == phase
    events = svc.audit.events(release_id=release.id)
    assert [e.kind for e in events] == ["created", *kinds]
    calls = http_server.at("/hook")
    assert [c.body["hook"] for c in calls] == [str(hook)] * len(calls)
    assert calls[0].body["release"]["phase"] == ("pending" if hook is BEFORE else "promoting")
    app = svc.catalog.get_app(APP)
    current = {f.name: f.current_version for f in app.functions}
    if reason is None:
        assert len(calls) == 1
        assert current == {"cart": "v2", "pay": "v2"}
        return
    expected = f"{hook} hook failed: {hook} hook {url} {reason}"
    assert done.reason == expected
    rolling_back = events[-2]
    assert rolling_back.message == f"rolling back: {expected}"
    assert rolling_back.data == {"reason": expected}
    assert current == {"cart": "v1", "pay": "v1"}, "a failed hook changes no running version"
    if hook is BEFORE:
        assert all(e.exposure == 0 for e in events), "no user saw the candidate"


class Recorder:
    """A hook runner that records its calls and answers as told."""

    def __init__(self, outcome: HookOutcome | None = None, during: Any = None) -> None:
        self.outcome = outcome or HookOutcome(True, "ok")
        self.during = during
        self.calls: list[tuple[str, str, str]] = []

    def run(self, release: ReleaseRecord, hook: Hook, spec: HookConfig) -> HookOutcome:
        self.calls.append((release.id, str(hook), release.phase))
        if self.during is not None:
            self.during(release)
        return self.outcome


def test_a_hook_cut_short_by_a_crash_runs_again_after_its_deadline(
    svc: ControlPlane, clock: FakeClock
) -> None:
    spec = HookSpec(url="http://127.0.0.1:9/never", timeout=10, retries=2)
    release = start_release(svc, "10%:1m, 100%", {"before_allow_traffic": spec})
    # a controller asked for the hook, then died before reporting its result
    first = svc.releases.advance(release.id, Tick(clock.now))
    assert first is not None
    assert first.transition.run_hook is BEFORE
    deadline = first.release.next_action_at
    assert deadline == clock.now + 10 * 3 + 30

    runner = Recorder()
    ctl = controller(svc, clock, runner)
    clock.advance(59)
    assert ctl.tick() == 0
    assert runner.calls == [], "the hook may still be running elsewhere"
    clock.advance(1)
    assert tick_through_hooks(ctl) == 2
    assert runner.calls == [(release.id, "before_allow_traffic", "pending")]
    assert [k for k, _ in release_events(svc, release.id)] == [
        "created",
        "hook_started",
        "hook_started",
        "started",
    ]


def test_a_hook_result_that_arrives_after_a_rollback_is_ignored(
    svc: ControlPlane, clock: FakeClock
) -> None:
    spec = HookSpec(url="http://127.0.0.1:9/never")
    release = start_release(svc, "10%:1m, 100%", {"before_allow_traffic": spec})
    runner = Recorder(
        during=lambda r: svc.releases.operate(r.id, Command.ROLLBACK, ACTOR, "changed my mind")
    )
    ctl = controller(svc, clock, runner)
    assert ctl.tick() == 1  # the hook started; its (passing) result is stale
    assert ctl.wait_for_hooks(10)
    assert ctl.tick() == 1  # rolling_back -> rolled_back
    done = svc.releases.get(release.id)
    assert (done.phase, done.reason) == ("rolled_back", "changed my mind")
    assert [k for k, _ in release_events(svc, release.id)] == [
        "created",
        "hook_started",
        "rolling_back",
        "rolled_back",
    ]


def test_a_broken_hook_runner_fails_the_hook(svc: ControlPlane, clock: FakeClock) -> None:
    def boom(_release: ReleaseRecord) -> None:
        raise RuntimeError("runner bug")

    spec = HookSpec(url="http://127.0.0.1:9/never")
    release = start_release(svc, "10%:1m, 100%", {"before_allow_traffic": spec})
    assert tick_through_hooks(controller(svc, clock, Recorder(during=boom))) == 3
    done = svc.releases.get(release.id)
    assert done.phase == "rolled_back"
    assert done.reason is not None
    assert "could not be run: runner bug" in done.reason


class ConflictOnce(ReleaseService):
    """Another writer bumps the release just as the first hook result comes back."""

    conflicts = 0

    def advance(
        self, release_id: str, event: Event, actor: str = "controller"
    ) -> Transitioned | None:
        if isinstance(event, HookResult) and not self.conflicts:
            self.conflicts += 1
            raise Conflict(f"release {release_id} was changed by someone else")
        return super().advance(release_id, event, actor)


def test_a_hook_result_is_reported_again_after_a_conflict(store: Store, clock: FakeClock) -> None:
    svc = ControlPlane(store, clock=clock)
    releases = svc.releases = ConflictOnce(svc.uow)
    spec = HookSpec(url="http://127.0.0.1:9/never")
    release = start_release(svc, "10%:1m, 100%", {"before_allow_traffic": spec})
    runner = Recorder()
    assert tick_through_hooks(controller(svc, clock, runner)) == 2
    assert releases.conflicts == 1
    assert len(runner.calls) == 1, "the hook is not run twice"
    assert svc.releases.get(release.id).phase == "running"
