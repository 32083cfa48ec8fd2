"""Starting releases: ids, baseline and candidate, validation, one active release per app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from coalmine.controller.schemas import HookSpec, ReleaseCreate, ReleaseRead, TargetingSpec
from coalmine.core.errors import Conflict, InvalidInput, NotFound
from coalmine.core.machine import Command, Tick
from coalmine.store.models import AppRow, ReleaseRow
from tests.service import (
    ACTOR,
    APP,
    POSTGRES_ONLY,
    SQLITE_ONLY,
    T0,
    Env,
    open_env,
    row_counts,
    seed,
    shop_spec,
)


@pytest.fixture
def env(database_url: str) -> Iterator[Env]:
    with open_env(database_url) as e:
        seed(e)
        yield e


def cart_v2() -> ReleaseCreate:
    return ReleaseCreate(candidate={"cart": "v2"})


def test_start_release_creates_a_pending_release(env: Env) -> None:
    svc = env.svc
    got: list[str] = []
    env.feed.subscribe(got.append)
    revision = svc.snapshots.revision(APP)
    env.clock.advance(10)

    r = svc.releases.start(
        APP,
        ReleaseCreate(
            candidate={"cart": "v2", "pay": "v2"},
            targeting=TargetingSpec(always_canary=["tester"], never_canary=["ceo"]),
            hooks={"before_allow_traffic": HookSpec(url="https://ci.example/check")},
            analysis={"interval": "1m"},
        ),
        "bob",
    )
    assert r.id == "shop-1"
    assert r.app == APP
    assert r.phase == "pending"
    assert (r.exposure, r.step) == (0, -1)
    assert r.baseline == {"cart": "v1", "pay": "v1"}  # notify has no current version: not in it
    assert r.candidate == {"cart": "v2", "pay": "v2"}
    assert r.changed == ["cart", "pay"]
    api = ReleaseRead.of(r)  # as the API shows it
    assert api.strategy == "10%:1m, 50%:2m, 100%"  # the app's default
    assert [(s.exposure, s.hold) for s in api.steps] == [(1000, 60.0), (5000, 120.0), (10000, 0.0)]
    assert r.route_mode == "user"
    assert api.targeting.always_canary == ["tester"]
    assert api.hooks["before_allow_traffic"].url == "https://ci.example/check"
    assert r.analysis == {"interval": "1m"}
    assert r.created_by == "bob"
    assert r.created_at == r.updated_at == r.next_action_at == T0 + 10
    assert r.finished_at is None
    assert r.row_version == 1

    assert svc.releases.get("shop-1") == r
    assert svc.releases.active(APP) == r
    assert svc.releases.recent(APP) == [r]
    assert svc.catalog.get_app(APP).active_release == "shop-1"
    assert svc.snapshots.revision(APP) == revision + 1
    assert got == [APP]
    created = svc.audit.events(release_id="shop-1")
    assert len(created) == 1
    assert (created[0].kind, created[0].actor, created[0].phase, created[0].exposure) == (
        "created",
        "bob",
        "pending",
        0,
    )
    assert "cart v1->v2" in created[0].message
    assert "pay v1->v2" in created[0].message
    assert svc.releases.due(T0 + 10) == ["shop-1"]
    assert svc.releases.due(T0 + 9) == []
    assert svc.releases.next_due_at() == T0 + 10


@SQLITE_ONLY
def test_a_release_keeps_unchanged_functions_in_both_channels(env: Env) -> None:
    r = env.svc.releases.start(
        APP,
        ReleaseCreate(candidate={"cart": "v3"}, strategy="AllAtOnce", route_mode="request"),
        ACTOR,
    )
    assert r.baseline == {"cart": "v1", "pay": "v1"}
    assert r.candidate == {"cart": "v3", "pay": "v1"}
    assert r.changed == ["cart"]
    assert ReleaseRead.of(r).strategy == "AllAtOnce"
    assert r.route_mode == "request"


def test_refused_releases_write_nothing(env: Env) -> None:
    svc = env.svc
    before = row_counts(env.store)
    revision = svc.snapshots.revision(APP)
    cases: list[tuple[str, ReleaseCreate, type[Exception], str]] = [
        (APP, ReleaseCreate(candidate={"search": "v1"}), NotFound, "no function named 'search'"),
        (APP, ReleaseCreate(candidate={"cart": "v9"}), NotFound, "'v9' of cart is not reg"),
        (APP, ReleaseCreate(candidate={"notify": "v1"}), InvalidInput, "no current version"),
        (APP, ReleaseCreate(candidate={"cart": "v1"}), InvalidInput, "nothing to release"),
        (
            APP,
            ReleaseCreate(candidate={"cart": "v2"}, strategy="Soonish"),
            InvalidInput,
            "unknown strategy",
        ),
        (
            APP,
            ReleaseCreate(
                candidate={"cart": "v2"},
                targeting=TargetingSpec(always_canary=["u"], never_canary=["u"]),
            ),
            InvalidInput,
            "both always-canary and never-canary",
        ),
        ("nope", cart_v2(), NotFound, "no app named 'nope'"),
    ]
    for app, req, error, problem in cases:
        with pytest.raises(error, match=problem):
            svc.releases.start(app, req, ACTOR)
    assert row_counts(env.store) == before
    assert svc.snapshots.revision(APP) == revision


def test_one_active_release_per_app_and_a_new_one_after_it_ends(env: Env) -> None:
    svc = env.svc
    first = svc.releases.start(APP, cart_v2(), ACTOR)
    before = row_counts(env.store)
    with pytest.raises(Conflict, match="already has an active release shop-1 \\(pending\\)"):
        svc.releases.start(APP, ReleaseCreate(candidate={"pay": "v2"}), ACTOR)
    assert row_counts(env.store) == before

    svc.releases.operate(first.id, Command.ROLLBACK, ACTOR, "bad canary")
    with pytest.raises(Conflict, match="rolling_back"):  # rolling back still owns the app
        svc.releases.start(APP, cart_v2(), ACTOR)
    svc.releases.advance(first.id, Tick(env.clock()))
    assert svc.releases.get(first.id).phase == "rolled_back"
    assert svc.releases.active(APP) is None

    second = svc.releases.start(APP, cart_v2(), ACTOR)
    assert second.id == "shop-2"
    assert second.baseline == {"cart": "v1", "pay": "v1"}
    svc.releases.operate(second.id, Command.PROMOTE, ACTOR)
    svc.releases.advance(second.id, Tick(env.clock()))
    assert svc.releases.get(second.id).phase == "promoted"

    third = svc.releases.start(APP, ReleaseCreate(candidate={"cart": "v3"}), ACTOR)
    assert third.id == "shop-3"
    assert third.baseline == {"cart": "v2", "pay": "v1"}  # the promoted candidate
    assert [r.id for r in svc.releases.recent(APP)] == ["shop-3", "shop-2", "shop-1"]
    assert [r.id for r in svc.releases.recent(APP, limit=1)] == ["shop-3"]


@SQLITE_ONLY
def test_salts_differ_between_releases(env: Env) -> None:
    svc = env.svc
    first = svc.releases.start(APP, cart_v2(), ACTOR)
    svc.releases.operate(first.id, Command.ROLLBACK, ACTOR)
    svc.releases.advance(first.id, Tick(env.clock()))
    svc.releases.start(APP, cart_v2(), ACTOR)
    with env.store.transaction() as s:
        salts = list(s.scalars(select(ReleaseRow.salt)))
    assert len(salts) == len(set(salts)) == 2


def release_row(app_id: int, seq: int, phase: str) -> ReleaseRow:
    return ReleaseRow(
        id=f"{APP}-{seq}",
        app_id=app_id,
        seq=seq,
        phase=phase,
        route_mode="user",
        salt=f"salt{seq}",
        strategy={"name": "AllAtOnce", "steps": [{"exposure": 10000, "hold": 0}]},
        baseline={"cart": "v1"},
        candidate={"cart": "v2"},
        created_at=T0,
        updated_at=T0,
    )


def test_the_database_itself_allows_one_active_release_per_app(env: Env) -> None:
    """The partial unique index holds even for a writer that skips the service's check."""
    env.svc.releases.start(APP, cart_v2(), ACTOR)
    with env.store.transaction() as s:
        app_id = s.scalar(select(AppRow.id).where(AppRow.name == APP))
    assert app_id is not None

    for phase in ("running", "paused", "promoting", "rolling_back", "pending"):
        with pytest.raises(IntegrityError), env.store.transaction() as s:
            s.add(release_row(app_id, 2, phase))
    # Finished releases are outside the index: as many as history needs.
    with env.store.transaction() as s:
        s.add_all([release_row(app_id, 2, "promoted"), release_row(app_id, 3, "rolled_back")])
        s.add(release_row(app_id, 4, "failed"))
    with env.store.transaction() as s:
        phases = sorted(s.scalars(select(ReleaseRow.phase)))
    assert phases == ["failed", "pending", "promoted", "rolled_back"]


@POSTGRES_ONLY
def test_a_racing_second_start_is_a_conflict(env: Env) -> None:
    """If another replica inserts an active release between our check and our insert."""
    svc = env.svc
    with env.store.transaction() as s:
        app_id = s.scalar(select(AppRow.id).where(AppRow.name == APP))
    assert app_id is not None
    calls = 0

    def clock() -> float:
        # start_release reads the clock after its checks, just before inserting
        nonlocal calls
        calls += 1
        if calls == 1:
            with env.store.transaction() as s:
                s.add(release_row(app_id, 7, "running"))
        return T0

    racing = type(svc)(env.store, env.feed, clock=clock)
    with pytest.raises(Conflict, match="started concurrently"):
        racing.releases.start(APP, cart_v2(), ACTOR)
    assert [r.id for r in svc.releases.recent(APP)] == ["shop-7"]


@SQLITE_ONLY
def test_release_ids_of_long_app_names_stay_valid_and_distinct(env: Env) -> None:
    """A release id is at most 64 characters; apps sharing a long prefix must not collide."""
    names = ["a" * 54 + "-payments", "a" * 54 + "-shipping", "b" * 61]  # 63, 63, 61
    ids = []
    for name in names:
        env.svc.catalog.apply(shop_spec().model_copy(update={"app": name}), ACTOR)
        ids.append(env.svc.releases.start(name, cart_v2(), ACTOR).id)
    assert ids[2] == "b" * 61 + "-1"  # short enough: <app>-<seq>
    assert len(set(ids)) == 3
    for rid, name in zip(ids, names, strict=True):
        assert len(rid) <= 64
        assert rid.endswith("-1")
        assert rid.startswith(name[:40])
        snap = env.svc.snapshots.snapshot(name)  # a valid core Release
        assert snap.state.release is not None
        assert snap.state.release.id == rid
