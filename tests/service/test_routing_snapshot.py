"""routing_snapshot(): what the data plane gets for an app, and its ETag."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from coalmine.controller.schemas import ReleaseCreate
from coalmine.core import Channel, Reason, RoutingContext, decide
from coalmine.core.errors import NotFound
from coalmine.core.machine import Command, Tick
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.store.models import ReleaseRow
from tests.service import ACTOR, APP, SQLITE_ONLY, Env, open_env, seed


@pytest.fixture
def env(database_url: str) -> Iterator[Env]:
    with open_env(database_url) as e:
        seed(e)
        yield e


def finish(env: Env, rid: str, command: Command) -> None:
    env.svc.releases.operate(rid, command, ACTOR, f"{command} by test")
    env.svc.releases.advance(rid, Tick(env.clock()))


def test_snapshot_versions_targets_release_and_rolled_back_history(env: Env) -> None:
    svc = env.svc
    with pytest.raises(NotFound):
        svc.snapshots.snapshot("nope")

    snap = svc.snapshots.snapshot(APP)
    assert snap.app == APP
    assert dict(snap.state.versions) == {"cart": "v1", "pay": "v1"}  # notify has none yet
    assert snap.targets == {
        "cart": {
            "v1": "shop.cart:handler",
            "v2": "https://cart-v2.example.com/invoke",
            "v3": "arn:aws:lambda:eu-west-1:123456789012:function:cart:3",
        },
        "notify": {"v1": "shop.notify:handler"},
        "pay": {"v1": "shop.pay:handler", "v2": "shop.pay:handler_v2"},
    }
    assert snap.target_of("pay", "v2") == "shop.pay:handler_v2"
    assert snap.state.release is None
    assert dict(snap.state.rolled_back) == {}
    assert snap.revision == svc.snapshots.revision(APP)
    assert snap.etag == f'"shop-{snap.revision}"'
    assert decide(snap.state, "user-1").reason is Reason.NO_RELEASE

    # shop-1 rolled back, shop-2 promoted, shop-3 rolled back, shop-4 running
    r1 = svc.releases.start(APP, ReleaseCreate(candidate={"cart": "v2"}), ACTOR)
    finish(env, r1.id, Command.ROLLBACK)
    r2 = svc.releases.start(APP, ReleaseCreate(candidate={"pay": "v2"}), ACTOR)
    finish(env, r2.id, Command.PROMOTE)
    r3 = svc.releases.start(APP, ReleaseCreate(candidate={"cart": "v3"}), ACTOR)
    finish(env, r3.id, Command.ROLLBACK)
    r4 = svc.releases.start(
        APP, ReleaseCreate(candidate={"cart": "v2"}, route_mode="request"), ACTOR
    )
    svc.releases.advance(r4.id, Tick(env.clock()))

    snap = svc.snapshots.snapshot(APP)
    assert dict(snap.state.versions) == {"cart": "v1", "pay": "v2"}
    rel = snap.state.release
    assert rel is not None
    assert (rel.id, str(rel.phase), rel.exposure) == ("shop-4", "running", 1000)
    assert dict(rel.baseline) == {"cart": "v1", "pay": "v2"}
    assert dict(rel.candidate) == {"cart": "v2", "pay": "v2"}
    assert str(rel.route_mode) == "request"
    with env.store.transaction() as s:
        assert rel.salt == s.scalar(select(ReleaseRow.salt).where(ReleaseRow.id == "shop-4"))
    assert [s.exposure for s in rel.strategy.steps] == [1000, 5000, 10000]
    assert {k: dict(v) for k, v in snap.state.rolled_back.items()} == {
        "shop-1": {"cart": "v1", "pay": "v1"},
        "shop-3": {"cart": "v1", "pay": "v2"},
    }
    assert decide(snap.state, "user-1").release_id == "shop-4"

    # the wire form round-trips
    again = RoutingSnapshot.from_dict(snap.to_dict())
    assert again.to_dict() == snap.to_dict()
    assert again.etag == snap.etag


@SQLITE_ONLY
def test_the_etag_follows_the_revision(env: Env) -> None:
    svc = env.svc
    first = svc.snapshots.snapshot(APP)
    assert svc.snapshots.snapshot(APP).etag == first.etag  # nothing changed: same ETag
    rid = svc.releases.start(APP, ReleaseCreate(candidate={"cart": "v2"}), ACTOR).id
    second = svc.snapshots.snapshot(APP)
    assert second.revision == first.revision + 1
    assert second.etag != first.etag
    svc.releases.note(rid, "analysis", "inconclusive", "judge")  # an audit note is not routing
    assert svc.snapshots.snapshot(APP).etag == second.etag
    svc.releases.advance(rid, Tick(env.clock()))
    third = svc.snapshots.snapshot(APP)
    assert third.etag not in (first.etag, second.etag)
    state = third.state
    canary = [u for u in (f"user-{i}" for i in range(2000)) if decide(state, u).is_canary]
    assert 100 <= len(canary) <= 300  # ~10% of users see the candidate
    assert all(decide(state, u).channel is Channel.CANARY for u in canary)


def test_rolled_back_history_is_bounded_to_the_last_ten(sqlite_url: str) -> None:
    with open_env(sqlite_url) as env:
        seed(env)
        for _ in range(12):
            rid = env.svc.releases.start(APP, ReleaseCreate(candidate={"cart": "v2"}), ACTOR).id
            finish(env, rid, Command.ROLLBACK)
        snap = env.svc.snapshots.snapshot(APP)
        assert snap.state.release is not None
        assert snap.state.release.id == "shop-12"
        assert sorted(snap.state.rolled_back, key=lambda k: int(k.split("-")[1])) == [
            f"shop-{i}" for i in range(2, 12)
        ]
        # shop-1 left the list, and its canary context is still never honoured: stale
        first = snap.state.release
        old = RoutingContext(APP, "shop-1", Channel.CANARY, {"cart": "v2", "pay": "v1"}, 2**40)
        d = decide(snap.state, "user-1", old)
        assert (d.release_id, d.reason) == (first.id, Reason.ROLLED_BACK)
        assert snap.state.stale(old) is not None
        assert snap.state.stale(dataclasses.replace(old, release_id="shop-2")) is None
        assert snap.state.stale(dataclasses.replace(old, release_id="shop-13")) is None
