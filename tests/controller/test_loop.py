"""The rollout loop on the real service and store (SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from coalmine.controller.leader import FileLockLeadership, SoleLeadership
from coalmine.controller.loop import MAX_TRANSITIONS_PER_TICK, Controller
from coalmine.controller.plane import ControlPlane
from coalmine.controller.releases import ReleaseService
from coalmine.core.errors import Conflict
from coalmine.core.machine import Command, Event
from coalmine.core.ports import Transitioned
from coalmine.store.changes import ChangeFeed
from coalmine.store.db import Store, open_store
from coalmine.store.uow import UnitOfWork
from tests.controller import (
    ACTOR,
    APP,
    FakeClock,
    NoHooks,
    release_events,
    start_release,
    wait_for,
)


def controller(svc: ControlPlane, clock: FakeClock | None = None, **kw: object) -> Controller:
    return Controller(
        svc,
        leadership=SoleLeadership(),
        hooks=NoHooks(),
        clock=clock or svc.clock,
        **kw,  # type: ignore[arg-type]
    )


def test_tick_walks_a_custom_strategy_to_promoted(svc: ControlPlane, clock: FakeClock) -> None:
    release = start_release(svc, "10%:1m, 50%:2m, 100%")
    ctl = controller(svc, clock)

    assert ctl.tick() == 1
    assert svc.releases.get(release.id).exposure == 1000
    assert ctl.tick() == 0, "a second tick at the same time changes nothing"

    clock.advance(59.9)
    assert ctl.tick() == 0, "the hold is not over"
    clock.advance(0.1)
    assert ctl.tick() == 1
    assert svc.releases.get(release.id).exposure == 5000
    assert ctl.tick() == 0

    clock.advance(120)
    # 100% holds 0 s, so promoting and promoted follow within the same tick
    assert ctl.tick() == 3
    done = svc.releases.get(release.id)
    assert (done.phase, done.exposure, done.next_action_at) == ("promoted", 10000, None)
    assert done.finished_at == clock.now
    assert release_events(svc, release.id) == [
        ("created", 0),
        ("started", 1000),
        ("step", 5000),
        ("step", 10000),
        ("promoting", 10000),
        ("promoted", 10000),
    ]
    app = svc.catalog.get_app(APP)
    assert {f.name: f.current_version for f in app.functions} == {"cart": "v2", "pay": "v2"}
    assert app.active_release is None
    assert ctl.tick() == 0


def test_zero_second_holds_chain_within_one_tick(svc: ControlPlane, clock: FakeClock) -> None:
    release = start_release(svc, "10%:0s, 50%:0s, 100%")
    assert controller(svc, clock).tick() == 5
    assert [k for k, _ in release_events(svc, release.id)] == [
        "created",
        "started",
        "step",
        "step",
        "promoting",
        "promoted",
    ]


def test_a_tick_is_bounded_per_release(svc: ControlPlane, clock: FakeClock) -> None:
    steps = ", ".join(f"{p}%:0s" for p in range(1, 30)) + ", 100%"
    release = start_release(svc, steps)
    ctl = controller(svc, clock)
    assert ctl.tick() == MAX_TRANSITIONS_PER_TICK
    assert ctl.tick() == 30 + 2 - MAX_TRANSITIONS_PER_TICK  # 30 steps, promoting, promoted
    assert svc.releases.get(release.id).phase == "promoted"


def test_pause_keeps_the_remaining_hold(svc: ControlPlane, clock: FakeClock) -> None:
    release = start_release(svc, "10%:1m, 100%")
    ctl = controller(svc, clock)
    ctl.tick()
    clock.advance(20)
    svc.releases.operate(release.id, Command.PAUSE, ACTOR, "look at the graphs")
    clock.advance(3600)
    assert ctl.tick() == 0, "a paused release does not move"
    svc.releases.operate(release.id, Command.RESUME, ACTOR)
    clock.advance(39)
    assert ctl.tick() == 0
    clock.advance(1)
    assert ctl.tick() == 3
    assert svc.releases.get(release.id).phase == "promoted"


def test_operator_rollback_completes_on_the_next_tick(svc: ControlPlane, clock: FakeClock) -> None:
    release = start_release(svc, "10%:1m, 100%")
    ctl = controller(svc, clock)
    ctl.tick()
    svc.releases.operate(release.id, Command.ROLLBACK, ACTOR, "error rate")
    assert ctl.tick() == 1
    done = svc.releases.get(release.id)
    assert (done.phase, done.exposure, done.reason) == ("rolled_back", 0, "error rate")
    app = svc.catalog.get_app(APP)
    assert {f.name: f.current_version for f in app.functions} == {"cart": "v1", "pay": "v1"}


class FlakyReleases(ReleaseService):
    """Fails to advance chosen releases: with Conflict, or with a bug."""

    def __init__(self, uow: UnitOfWork, failures: dict[str, Exception]) -> None:
        super().__init__(uow)
        self.failures = failures

    def advance(
        self, release_id: str, event: Event, actor: str = "controller"
    ) -> Transitioned | None:
        if release_id in self.failures:
            raise self.failures[release_id]
        return super().advance(release_id, event, actor)


@pytest.mark.parametrize(
    "error", [Conflict("someone else won"), RuntimeError("a bug")], ids=["conflict", "bug"]
)
def test_a_failing_release_does_not_stop_the_others(
    store: Store, clock: FakeClock, error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    failures: dict[str, Exception] = {}
    svc = ControlPlane(store, clock=clock)
    svc.releases = FlakyReleases(svc.uow, failures)
    bad = start_release(svc, "10%:1m, 100%", app="bad")
    clock.advance(1)
    good = start_release(svc, "10%:1m, 100%", app="good")
    failures[bad.id] = error
    ctl = controller(svc, clock)
    with caplog.at_level(logging.INFO, logger="coalmine.controller.loop"):
        assert ctl.tick() == 1
    assert svc.releases.get(good.id).phase == "running"
    assert svc.releases.get(bad.id).phase == "pending"
    assert bad.id in caplog.text
    del failures[bad.id]
    assert ctl.tick() == 1
    assert svc.releases.get(bad.id).phase == "running"


def test_two_controllers_never_both_make_a_step(database_url: str, clock: FakeClock) -> None:
    """Controllers racing on one release (each with its own engine): each step happens once."""
    racers = 4
    stores = [open_store(database_url) for _ in range(racers)]
    try:
        services = [ControlPlane(st, clock=clock) for st in stores]
        release = start_release(services[0], "5%:10s, 10%:10s, 20%:10s, 40%:10s, 70%:10s, 100%")
        controllers = [controller(s, clock) for s in services]
        made: list[int] = []
        lock = threading.Lock()
        for _round in range(8):
            barrier = threading.Barrier(racers)

            def race(
                ctl: Controller, barrier: threading.Barrier = barrier, now: float = clock.now
            ) -> None:
                barrier.wait(5)
                n = ctl.tick(now)
                with lock:
                    made.append(n)

            threads = [threading.Thread(target=race, args=(c,)) for c in controllers]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            clock.advance(10)
        events = release_events(services[0], release.id)
        assert events == [
            ("created", 0),
            ("started", 500),
            ("step", 1000),
            ("step", 2000),
            ("step", 4000),
            ("step", 7000),
            ("step", 10000),
            ("promoting", 10000),
            ("promoted", 10000),
        ]
        assert sum(made) == len(events) - 1, "every transition is counted by exactly one racer"
    finally:
        for st in stores:
            st.dispose()


# -- run_forever: real clock, real threads --------------------------------------


def test_the_loop_sleeps_until_the_next_timer(store: Store) -> None:
    svc = ControlPlane(store)
    ctl = Controller(svc, leadership=SoleLeadership(), hooks=NoHooks(), interval=30)
    release = start_release(svc, "10%:0.3s, 50%:0.3s, 100%")
    ctl.start()
    try:
        wait_for(lambda: svc.releases.get(release.id).phase == "promoted", 10, "promoted")
    finally:
        ctl.stop()
    assert not ctl.running
    assert [k for k, _ in release_events(svc, release.id)][1:] == [
        "started",
        "step",
        "step",
        "promoting",
        "promoted",
    ]


def test_the_change_feed_wakes_the_loop(store: Store) -> None:
    """With nothing due the loop sleeps a whole interval, unless the feed says something changed."""
    feed = ChangeFeed(store)
    feed.start()
    svc = ControlPlane(store, feed)
    ctl = Controller(svc, feed=feed, leadership=SoleLeadership(), hooks=NoHooks(), interval=60)
    ctl.start()
    try:
        wait_for(lambda: ctl.ticks >= 1, 10, "the first tick")
        release = start_release(svc, "10%:1h, 100%")
        wait_for(lambda: svc.releases.get(release.id).phase == "running", 10, "started")
        svc.releases.operate(release.id, Command.ROLLBACK, ACTOR, "alarm")
        wait_for(lambda: svc.releases.get(release.id).phase == "rolled_back", 10, "rolled back")
        started = time.monotonic()
    finally:
        ctl.stop()
        feed.stop()
    assert time.monotonic() - started < 5, "stop does not wait for the interval"


def test_only_the_leader_ticks_and_a_standby_takes_over(sqlite_url: str, tmp_path: Path) -> None:
    store = open_store(sqlite_url)
    try:
        svc = ControlPlane(store)
        lock = tmp_path / "leader.lock"
        a = Controller(svc, leadership=FileLockLeadership(lock), hooks=NoHooks(), interval=0.05)
        b = Controller(svc, leadership=FileLockLeadership(lock), hooks=NoHooks(), interval=0.05)
        a.start()
        wait_for(lambda: a.leadership.held, 5, "a leads")
        b.start()
        release = start_release(svc, "10%:0.2s, 100%")
        wait_for(lambda: svc.releases.get(release.id).phase == "promoted", 10, "promoted")
        assert b.ticks == 0
        assert not b.leadership.held
        a.stop()
        wait_for(lambda: b.leadership.held and b.ticks > 0, 5, "b takes over")
        b.stop()
        assert not b.leadership.held
    finally:
        store.dispose()


def test_a_stuck_release_does_not_make_the_loop_spin(store: Store) -> None:
    """A due release that cannot advance (another writer, a bug) is retried each interval."""
    failures: dict[str, Exception] = {}
    svc = ControlPlane(store)
    svc.releases = FlakyReleases(svc.uow, failures)
    release = start_release(svc, "10%:1h, 100%")
    failures[release.id] = RuntimeError("a bug")
    ctl = Controller(svc, leadership=SoleLeadership(), hooks=NoHooks(), interval=0.2)
    ctl.start()
    try:
        wait_for(lambda: ctl.ticks >= 1, 10, "the first tick")
        first = time.monotonic()
        wait_for(lambda: ctl.ticks >= 4, 10, "three more ticks")
        elapsed = time.monotonic() - first
    finally:
        ctl.stop()
    assert elapsed >= 0.5, f"3 ticks in {elapsed:.3f}s: the loop spins"
    assert svc.releases.get(release.id).phase == "pending"
