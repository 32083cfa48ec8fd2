"""Optimistic concurrency: two writers of one release never both win."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy.orm.exc import StaleDataError

from coalmine.controller.plane import ControlPlane
from coalmine.controller.schemas import ReleaseCreate, VersionCreate
from coalmine.core.errors import Conflict
from coalmine.core.machine import Command, InvalidTransition, Tick
from coalmine.core.records import ReleaseRecord
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.store.models import ReleaseRow
from tests.service import ACTOR, APP, POSTGRES_ONLY, T0, Env, open_env, seed, shop_spec


@pytest.fixture
def env(database_url: str) -> Iterator[Env]:
    with open_env(database_url) as e:
        seed(e)
        yield e


def start(env: Env) -> str:
    return env.svc.releases.start(APP, ReleaseCreate(candidate={"cart": "v2"}), ACTOR).id


class InterleavingClock:
    """A clock that runs ``between`` on its n-th reading: after the release was loaded.

    `ControlPlane._apply_event` reads the clock once it has loaded the release and
    computed the transition, before writing; `operate` reads it once before that.
    """

    def __init__(self, nth: int, between: Callable[[], None]) -> None:
        self.calls = 0
        self.nth = nth
        self.between = between

    def __call__(self) -> float:
        self.calls += 1
        if self.calls == self.nth:
            self.between()
        return T0


@POSTGRES_ONLY
def test_two_services_change_the_same_release_one_wins(env: Env) -> None:
    rid = start(env)
    env.svc.releases.advance(rid, Tick(T0))  # running
    other = ControlPlane(env.store, env.feed, clock=lambda: T0 + 1)
    won: list[ReleaseRecord] = []

    def other_pauses() -> None:
        won.append(other.releases.operate(rid, Command.PAUSE, "bob", "bob was faster"))

    loser = ControlPlane(env.store, env.feed, clock=InterleavingClock(2, other_pauses))
    events_before = len(env.svc.audit.events(release_id=rid))
    with pytest.raises(Conflict, match=f"release {rid} was changed by someone else"):
        loser.releases.operate(rid, Command.ROLLBACK, "alice", "alice was slower")

    assert [r.phase for r in won] == ["paused"]
    r = env.svc.releases.get(rid)
    assert (r.phase, r.reason, r.row_version) == ("paused", "bob was faster", 3)
    events = env.svc.audit.events(release_id=rid)
    assert len(events) == events_before + 1
    assert (events[-1].actor, events[-1].kind) == ("bob", "paused")

    # once it has seen the new state, the loser decides again: on the paused release
    rolled = loser.releases.operate(rid, Command.ROLLBACK, "alice", "still bad")
    assert (rolled.phase, rolled.row_version) == ("rolling_back", 4)


@POSTGRES_ONLY
def test_a_tick_that_loses_to_an_operator_changes_nothing(env: Env) -> None:
    """The controller's tick and an operator's rollback race: the rollback must not be undone."""
    rid = start(env)
    other = ControlPlane(env.store, env.feed, clock=lambda: T0)

    def operator_rolls_back() -> None:
        other.releases.operate(rid, Command.ROLLBACK, "alice", "alarm")

    controller = ControlPlane(env.store, env.feed, clock=InterleavingClock(1, operator_rolls_back))
    revision = env.svc.snapshots.revision(APP)
    with pytest.raises(Conflict):
        controller.releases.advance(rid, Tick(T0))
    r = env.svc.releases.get(rid)
    assert (r.phase, r.exposure, r.reason) == ("rolling_back", 0, "alarm")
    assert env.svc.snapshots.revision(APP) == revision + 1  # only the winner bumped it
    assert [e.kind for e in env.svc.audit.events(release_id=rid)] == ["created", "rolling_back"]


def test_stale_row_version_is_refused_by_the_database(env: Env) -> None:
    """A session that writes a release it loaded before someone else's commit fails."""
    rid = start(env)
    slow = env.store.sessions()
    try:
        with slow.begin():
            stale = slow.get(ReleaseRow, rid)  # loaded at row_version 1, kept after commit
        assert stale is not None
        with env.store.transaction() as s:
            fresh = s.get(ReleaseRow, rid)
            assert fresh is not None
            fresh.phase = "running"
        with slow.begin():
            assert stale.row_version == 1
            stale.phase = "rolling_back"
            with pytest.raises(StaleDataError):
                slow.flush()
    finally:
        slow.close()
    r = env.svc.releases.get(rid)
    assert (r.phase, r.row_version) == ("running", 2)


def test_threads_racing_operate_one_wins_each_step(env: Env) -> None:
    """Two threads give the same command at once: exactly one succeeds each round.

    On PostgreSQL both load the release before either writes (a barrier in the clock):
    the loser's write finds a newer row version, a Conflict. On SQLite transactions are
    serialised (BEGIN IMMEDIATE): the loser sees the winner's result, an InvalidTransition.
    """
    rid = start(env)
    env.svc.releases.advance(rid, Tick(T0))  # running
    interleave = env.store.is_postgres
    gate = threading.Barrier(2, timeout=10)
    local = threading.local()

    def clock() -> float:
        local.calls = getattr(local, "calls", 0) + 1
        if interleave and local.calls == 2:  # loaded: wait for the other thread to load it
            gate.wait()
        return T0

    lock = threading.Lock()

    def race(
        svc: ControlPlane, actor: str, command: Command, results: list[ReleaseRecord | Exception]
    ) -> None:
        local.calls = 0
        try:
            out: ReleaseRecord | Exception = svc.releases.operate(rid, command, actor)
        except (Conflict, InvalidTransition) as exc:
            out = exc
        with lock:
            results.append(out)

    services = [ControlPlane(env.store, env.feed, clock=clock) for _ in range(2)]
    rounds = [Command.PAUSE, Command.RESUME, Command.PAUSE, Command.ROLLBACK]
    for round_no, command in enumerate(rounds):
        results: list[ReleaseRecord | Exception] = []
        threads = [
            threading.Thread(target=race, args=(svc, f"op{i}", command, results))
            for i, svc in enumerate(services)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads)
        wins = [r for r in results if isinstance(r, ReleaseRecord)]
        losses = [r for r in results if isinstance(r, Exception)]
        assert len(wins) == 1, f"round {round_no} ({command}): {results}"
        assert len(losses) == 1
        assert isinstance(losses[0], Conflict if interleave else InvalidTransition)
        assert wins[0].row_version == round_no + 3
        gate.reset()

    r = env.svc.releases.get(rid)
    assert r.phase == "rolling_back"
    kinds = [e.kind for e in env.svc.audit.events(release_id=rid)]
    assert kinds == ["created", "started", "paused", "resumed", "paused", "rolling_back"]


@POSTGRES_ONLY
def test_concurrent_changes_to_one_app_never_share_a_revision(env: Env) -> None:
    """Every committed routing change gets its own revision: the ETag and the SSE stream
    skip a snapshot whose revision they have seen, so a lost bump would hide a rollback."""
    rid = start(env)
    env.svc.releases.advance(rid, Tick(T0))  # running at 10%
    before = env.svc.snapshots.snapshot(APP)
    seen: list[RoutingSnapshot] = []
    operator = ControlPlane(env.store, env.feed, clock=lambda: T0)

    def rollback_meanwhile() -> None:
        operator.releases.operate(rid, Command.ROLLBACK, "alice", "alarm")
        seen.append(env.svc.snapshots.snapshot(APP))

    # register_version loads the app, then reads the clock: the rollback commits in between
    registrar = ControlPlane(env.store, env.feed, clock=InterleavingClock(1, rollback_meanwhile))
    registrar.catalog.register_version(APP, "pay", VersionCreate(name="v9", target="m:h9"), ACTOR)
    after = env.svc.snapshots.snapshot(APP)

    [mid] = seen
    assert mid.revision == before.revision + 1
    assert after.revision == before.revision + 2
    assert len({before.etag, mid.etag, after.etag}) == 3
    assert after.state.release is not None
    assert str(after.state.release.phase) == "rolling_back"
    assert "v9" in after.targets["pay"]


@POSTGRES_ONLY
def test_two_applies_creating_one_app_at_once(env: Env) -> None:
    """Two CI jobs apply the same new coalmine.yaml: one creates it, the other gets a
    Conflict (not a database error), and applying again is then a no-op."""
    spec = shop_spec().model_copy(update={"app": "blog"})
    other = ControlPlane(env.store, env.feed, clock=lambda: T0)
    done: list[bool] = []

    def other_applies() -> None:
        done.append(other.catalog.apply(spec, "ci-job-2").changed)

    # apply reads the clock once it has found no app named blog, before inserting it
    first = ControlPlane(env.store, env.feed, clock=InterleavingClock(1, other_applies))
    with pytest.raises(Conflict, match="'blog'"):
        first.catalog.apply(spec, "ci-job-1")
    assert done == [True]
    assert not env.svc.catalog.apply(spec, "ci-job-1").changed
    assert [a.name for a in env.svc.catalog.list_apps()] == ["blog", APP]
    assert {e.actor for e in env.svc.audit.events(app="blog")} == {"ci-job-2"}


@POSTGRES_ONLY
def test_racing_duplicate_function_or_version_is_a_conflict(env: Env) -> None:
    """The service checks, then inserts; a writer in between loses to the unique constraint."""
    other = ControlPlane(env.store, env.feed, clock=lambda: T0)
    build = VersionCreate(name="v9", target="shop.cart:build9")

    def other_adds() -> None:
        other.catalog.add_function(APP, "search", "bob")

    def other_registers() -> None:
        other.catalog.register_version(APP, "cart", build, "bob")

    racing = ControlPlane(env.store, env.feed, clock=InterleavingClock(1, other_adds))
    with pytest.raises(Conflict, match="already has a function named 'search'"):
        racing.catalog.add_function(APP, "search", ACTOR)
    racing = ControlPlane(env.store, env.feed, clock=InterleavingClock(1, other_registers))
    with pytest.raises(Conflict, match="v9 of cart was registered at the same time"):
        racing.catalog.register_version(APP, "cart", build, ACTOR)

    app = env.svc.catalog.get_app(APP)
    assert "search" in [f.name for f in app.functions]
    cart = next(f for f in app.functions if f.name == "cart")
    assert [v.name for v in cart.versions].count("v9") == 1
    assert {e.actor for e in env.svc.audit.events(app=APP)[-2:]} == {"bob"}
