"""Release transitions through the service: the state machine, persisted and audited."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from coalmine.controller.schemas import HookSpec, ReleaseCreate
from coalmine.core.errors import NotFound
from coalmine.core.machine import (
    Command,
    EventKind,
    Hook,
    HookResult,
    InvalidTransition,
    Operator,
    Tick,
)
from coalmine.core.records import EventRecord
from tests.service import ACTOR, APP, SQLITE_ONLY, T0, Env, open_env, row_counts, seed


@pytest.fixture
def env(database_url: str) -> Iterator[Env]:
    with open_env(database_url) as e:
        seed(e)
        yield e


def start(env: Env, **settings: object) -> str:
    req = ReleaseCreate.model_validate({"candidate": {"cart": "v2", "pay": "v2"}, **settings})
    return env.svc.releases.start(APP, req, ACTOR).id


def currents(env: Env) -> dict[str, str | None]:
    return {f.name: f.current_version for f in env.svc.catalog.get_app(APP).functions}


def new_events(env: Env, after: int) -> list[EventRecord]:
    return env.svc.audit.events(app=APP, after=after)


def last_event_id(env: Env) -> int:
    return env.svc.audit.events(app=APP)[-1].id


def test_a_release_walks_every_step_to_promoted(env: Env) -> None:
    svc, clock = env.svc, env.clock
    rid = start(env)
    notified: list[str] = []
    env.feed.subscribe(notified.append)

    # (seconds to advance, expected phase, step, exposure, event kind)
    walk: list[tuple[float, str, int, int, EventKind]] = [
        (0, "running", 0, 1000, EventKind.STARTED),
        (60, "running", 1, 5000, EventKind.STEP),
        (120, "running", 2, 10000, EventKind.STEP),
        (0, "promoting", 2, 10000, EventKind.PROMOTING),
        (0, "promoted", 2, 10000, EventKind.PROMOTED),
    ]
    for seconds, phase, step, exposure, kind in walk:
        clock.advance(seconds)
        revision, mark, version = (
            svc.snapshots.revision(APP),
            last_event_id(env),
            svc.releases.get(rid),
        )
        if seconds:  # not due a moment before its time: nothing happens, nothing is written
            assert svc.releases.advance(rid, Tick(clock() - 0.5)) is None
            assert new_events(env, mark) == []
        outcome = svc.releases.advance(rid, Tick(clock()))
        assert outcome is not None
        r = outcome.release
        assert (r.phase, r.step, r.exposure) == (phase, step, exposure)
        assert outcome.transition.kind is kind
        assert outcome.transition.run_hook is None
        assert r.updated_at == clock()
        assert r.row_version == version.row_version + 1
        assert svc.releases.get(rid) == r
        # exactly one audit event per transition, describing the new state
        [ev] = new_events(env, mark)
        assert (ev.release_id, ev.actor, ev.kind, ev.phase, ev.exposure, ev.at) == (
            rid,
            "controller",
            str(kind),
            phase,
            exposure,
            clock(),
        )
        assert ev.message == outcome.transition.message
        # the routing changed (phase or exposure): new revision, and the feed was told
        assert svc.snapshots.revision(APP) == revision + 1
        assert notified.pop() == APP

    r = svc.releases.get(rid)
    assert r.finished_at == clock()
    assert r.next_action_at is None
    assert currents(env) == {"cart": "v2", "notify": None, "pay": "v2"}
    assert svc.releases.active(APP) is None
    # a finished release ignores further ticks
    assert svc.releases.advance(rid, Tick(clock() + 3600)) is None
    assert svc.releases.due(clock() + 3600) == []
    assert [e.kind for e in svc.audit.events(release_id=rid)] == [
        "created",
        "started",
        "step",
        "step",
        "promoting",
        "promoted",
    ]


@SQLITE_ONLY
def test_hooks_run_without_changing_the_routing(env: Env) -> None:
    svc, clock = env.svc, env.clock
    hook = HookSpec(url="https://ci.example/check", timeout=10, retries=2)
    rid = start(
        env,
        strategy="AllAtOnce",
        hooks={"before_allow_traffic": hook, "after_allow_traffic": hook},
    )
    revision, mark = svc.snapshots.revision(APP), last_event_id(env)

    outcome = svc.releases.advance(rid, Tick(clock()))
    assert outcome is not None
    assert outcome.transition.run_hook is Hook.BEFORE_ALLOW_TRAFFIC
    assert outcome.release.phase == "pending"
    assert outcome.release.next_action_at == clock() + 10 * 3 + 30  # the hook's deadline
    assert svc.snapshots.revision(APP) == revision  # nothing the data plane must see
    [ev] = new_events(env, mark)
    assert ev.kind == "hook_started"

    # a stale result (the wrong hook) is ignored
    assert svc.releases.advance(rid, HookResult(Hook.AFTER_ALLOW_TRAFFIC, True, clock())) is None
    outcome = svc.releases.advance(rid, HookResult(Hook.BEFORE_ALLOW_TRAFFIC, True, clock()))
    assert outcome is not None
    assert (outcome.release.phase, outcome.release.exposure) == ("running", 10000)
    assert svc.snapshots.revision(APP) == revision + 1

    svc.releases.advance(rid, Tick(clock()))  # promoting
    outcome = svc.releases.advance(rid, Tick(clock()))
    assert outcome is not None
    assert outcome.transition.run_hook is Hook.AFTER_ALLOW_TRAFFIC
    clock.advance(5)
    outcome = svc.releases.advance(
        rid, HookResult(Hook.AFTER_ALLOW_TRAFFIC, False, clock(), "HTTP 500")
    )
    assert outcome is not None
    assert outcome.release.phase == "rolling_back"
    assert outcome.release.reason == "after_allow_traffic hook failed: HTTP 500"
    assert svc.audit.events(release_id=rid)[-1].data == {"reason": outcome.release.reason}
    svc.releases.advance(rid, Tick(clock()))
    assert svc.releases.get(rid).phase == "rolled_back"
    assert currents(env) == {"cart": "v1", "notify": None, "pay": "v1"}


def test_operator_commands(env: Env) -> None:
    svc, clock = env.svc, env.clock
    rid = start(env)
    forbidden_before = row_counts(env.store)

    with pytest.raises(InvalidTransition, match="cannot pause a release that is pending"):
        svc.releases.operate(rid, Command.PAUSE, ACTOR)
    with pytest.raises(InvalidTransition, match="cannot resume a release that is pending"):
        svc.releases.operate(rid, Command.RESUME, ACTOR)
    assert row_counts(env.store) == forbidden_before
    assert svc.releases.get(rid).row_version == 1

    svc.releases.advance(rid, Tick(clock()))  # running at 10%, next step in 60 s
    clock.advance(20)
    revision, mark = svc.snapshots.revision(APP), last_event_id(env)
    paused = svc.releases.operate(rid, Command.PAUSE, "carol", "looking at p99")
    assert paused.phase == "paused"
    assert paused.next_action_at is None
    assert paused.reason == "looking at p99"
    assert paused.exposure == 1000  # pausing holds the exposure
    [ev] = new_events(env, mark)
    assert (ev.kind, ev.actor, ev.message, ev.phase, ev.exposure) == (
        "paused",
        "carol",
        "paused: looking at p99",
        "paused",
        1000,
    )
    assert ev.data == {"reason": "looking at p99"}
    assert svc.snapshots.revision(APP) == revision + 1
    assert svc.releases.advance(rid, Tick(clock() + 3600)) is None  # a paused release does not move
    with pytest.raises(InvalidTransition, match="only a running or promoting one"):
        svc.releases.operate(rid, Command.PAUSE, "carol")

    clock.advance(600)
    resumed = svc.releases.operate(rid, Command.RESUME, "carol")
    assert resumed.phase == "running"
    assert resumed.next_action_at == clock() + 40  # the 40 s that were left on the step
    assert resumed.reason is None
    assert svc.audit.events(release_id=rid)[-1].message == "resumed at 10%; next step in 40s"

    promoting = svc.releases.operate(rid, Command.PROMOTE, "carol", "looks good")
    assert (promoting.phase, promoting.exposure) == ("promoting", 10000)
    assert svc.audit.events(release_id=rid)[-1].message == "promoted by an operator: looks good"
    for command in (Command.PROMOTE, Command.RESUME):
        with pytest.raises(InvalidTransition):
            svc.releases.operate(rid, command, "carol")
    svc.releases.advance(rid, Tick(clock()))
    assert svc.releases.get(rid).phase == "promoted"
    with pytest.raises(InvalidTransition, match="cannot roll back a release that is promoted"):
        svc.releases.operate(rid, Command.ROLLBACK, "carol")
    with pytest.raises(NotFound):
        svc.releases.operate("shop-99", Command.ROLLBACK, "carol")
    assert currents(env) == {"cart": "v2", "notify": None, "pay": "v2"}


def test_rollback_keeps_the_current_versions(env: Env) -> None:
    svc, clock = env.svc, env.clock
    rid = start(env)
    svc.releases.advance(rid, Tick(clock()))
    clock.advance(60)
    svc.releases.advance(rid, Tick(clock()))  # 50%
    revision = svc.snapshots.revision(APP)

    r = svc.releases.operate(rid, Command.ROLLBACK, "judge", "error rate 4.1% > 1%")
    assert r.phase == "rolling_back"
    assert r.reason == "error rate 4.1% > 1%"
    assert r.next_action_at == clock()  # due at once
    assert svc.snapshots.revision(APP) == revision + 1
    snap = svc.snapshots.snapshot(APP)
    assert snap.state.release is not None
    assert str(snap.state.release.phase) == "rolling_back"
    assert snap.revision == revision + 1
    assert svc.releases.due(clock()) == [rid]
    with pytest.raises(InvalidTransition, match="cannot roll back a release that is rolling_back"):
        svc.releases.operate(rid, Command.ROLLBACK, "judge")
    with pytest.raises(InvalidTransition):
        svc.releases.operate(rid, Command.PROMOTE, "judge")

    outcome = svc.releases.advance(rid, Tick(clock()))
    assert outcome is not None
    assert outcome.release.phase == "rolled_back"
    assert outcome.release.exposure == 0
    assert outcome.release.finished_at == clock()
    assert outcome.transition.message == "rolled back: error rate 4.1% > 1%"
    snap = svc.snapshots.snapshot(APP)
    assert snap.state.release is not None
    assert str(snap.state.release.phase) == "rolled_back"
    assert snap.revision == revision + 2
    assert currents(env) == {"cart": "v1", "notify": None, "pay": "v1"}
    assert [e.kind for e in svc.audit.events(release_id=rid)][-2:] == [
        "rolling_back",
        "rolled_back",
    ]
    assert svc.releases.due(clock() + 1e6) == []


@SQLITE_ONLY
def test_advance_takes_operator_events_and_records_write_events(env: Env) -> None:
    svc, clock = env.svc, env.clock
    rid = start(env)
    outcome = svc.releases.advance(rid, Operator(Command.ROLLBACK, clock(), "alarm fired"), "alarm")
    assert outcome is not None
    assert outcome.release.phase == "rolling_back"
    revision, version = svc.snapshots.revision(APP), svc.releases.get(rid).row_version
    ev = svc.releases.note(rid, "analysis", "canary p99 ok", "judge", {"verdict": "pass"})
    assert (ev.kind, ev.release_id, ev.phase, ev.exposure, ev.data) == (
        "analysis",
        rid,
        "rolling_back",
        0,
        {"verdict": "pass"},
    )
    assert svc.audit.events(release_id=rid)[-1] == ev
    assert svc.snapshots.revision(APP) == revision  # an audit note changes no routing
    assert svc.releases.get(rid).row_version == version
    assert ev.at >= T0
