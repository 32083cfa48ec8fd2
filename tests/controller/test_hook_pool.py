"""Hooks run off the tick: a hook endpoint that drips its answer (a real server on 127.0.0.1)
delays no other release, and fails its own release once its total deadline has passed."""

from __future__ import annotations

import threading
import time

from coalmine.controller.hook_pool import GRACE, HookPool, budget
from coalmine.controller.hooks import HookDispatcher
from coalmine.controller.leader import SoleLeadership
from coalmine.controller.loop import Controller
from coalmine.controller.plane import ControlPlane
from coalmine.controller.schemas import HookSpec
from coalmine.core.machine import Command, Hook
from coalmine.core.ports import HookOutcome
from coalmine.core.records import HookConfig, ReleaseRecord
from tests.controller import ACTOR, FakeClock, HttpServer, release_events, start_release

BEFORE = Hook.BEFORE_ALLOW_TRAFFIC


def test_a_dripping_hook_delays_no_other_release(
    svc: ControlPlane, clock: FakeClock, http_server: HttpServer
) -> None:
    # 200 then a body of 8 bytes, one every 0.5 s: every read is within the 1 s timeout
    drip = http_server.route("/drip", 200, body="x" * 8, drip=0.5)
    slow_hook = HookSpec(url=drip, timeout=1, retries=0)
    slow = start_release(svc, "10%:0s, 100%", {"before_allow_traffic": slow_hook}, app="slow")
    other = start_release(svc, "10%:1m, 100%", app="other")
    bad = start_release(svc, "10%:1m, 100%", app="bad")
    with HookDispatcher() as hooks:
        ctl = Controller(svc, leadership=SoleLeadership(), hooks=hooks, clock=clock)
        begun = time.monotonic()
        ctl.tick()
        first = time.monotonic() - begun
        http_server.wait("/drip", 1)
        clock.advance(60)  # the other release's step is due; the bad canary is rolled back
        svc.releases.operate(bad.id, Command.ROLLBACK, ACTOR, "canary errors")
        second = time.monotonic()
        ctl.tick()
        took = first + time.monotonic() - second
        assert took < ctl.interval, f"two ticks took {took:.1f}s while a hook dripped"
        assert svc.releases.get(other.id).phase == "promoted"
        assert svc.releases.get(bad.id).phase == "rolled_back"
        assert svc.releases.get(slow.id).phase == "pending", "its hook still runs"

        assert ctl.wait_for_hooks(10)
        ctl.tick()
        waited = time.monotonic() - begun
    done = svc.releases.get(slow.id)
    assert done.phase == "rolled_back"
    assert done.reason == (
        f"before_allow_traffic hook failed: before_allow_traffic hook {drip} timed out (1s)"
        " after 1 attempt"
    )
    assert waited < budget(slow_hook.config()) + GRACE, "the hook's deadline is its total time"
    assert [k for k, _ in release_events(svc, slow.id)] == [
        "created",
        "hook_started",
        "rolling_back",
        "rolled_back",
    ]


class Stuck:
    """A hook runner that never answers until released (a Lambda invoke that hangs)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def run(self, release: ReleaseRecord, hook: Hook, spec: HookConfig) -> HookOutcome:
        self.calls += 1
        self.release.wait(30)
        return HookOutcome(True, "passed, far too late")


def test_a_hook_past_its_total_deadline_fails_its_release(
    svc: ControlPlane, clock: FakeClock
) -> None:
    spec = HookSpec(url="http://127.0.0.1:9/stuck", timeout=0.2, retries=0)
    release = start_release(svc, "10%:0s, 100%", {"before_allow_traffic": spec})
    runner = Stuck()
    ctl = Controller(svc, leadership=SoleLeadership(), hooks=runner, clock=clock)
    try:
        assert ctl.tick() == 1
        assert ctl.wait_for_hooks(5)
        assert ctl.tick() == 2
    finally:
        runner.release.set()
        ctl.hook_pool.close()
    done = svc.releases.get(release.id)
    assert done.phase == "rolled_back"
    assert done.reason == (
        "before_allow_traffic hook failed: before_allow_traffic hook"
        " http://127.0.0.1:9/stuck did not finish within 0.2s"
    )
    assert runner.calls == 1


def test_one_hook_at_a_time_per_release_and_the_budget_is_below_the_store_timer() -> None:
    pool = HookPool(Stuck(), workers=1)
    spec = HookConfig("http://127.0.0.1:9/x", timeout=5, retries=10)
    assert budget(spec) == 5 * 11 + 2 * 10
    assert budget(spec) + GRACE < spec.deadline
    pool.close()
