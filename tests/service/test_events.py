"""events(): the audit log, filtered by app and release, paged with ``after``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from coalmine.controller.plane import ControlPlane
from coalmine.controller.schemas import ReleaseCreate, VersionCreate
from coalmine.core.errors import NotFound
from coalmine.core.machine import Tick
from coalmine.core.records import EventRecord
from tests.service import ACTOR, APP, Env, open_env, seed, shop_spec


@pytest.fixture
def env(database_url: str) -> Iterator[Env]:
    with open_env(database_url) as e:
        yield e


def test_events_filter_page_and_refuse_unknown_names(env: Env) -> None:
    svc = env.svc
    sunk: list[tuple[EventRecord, list[str]]] = []
    svc.sinks.append(lambda ev, hooks: sunk.append((ev, hooks)))
    seed(env)
    svc.catalog.create_app("blog", ACTOR)
    svc.catalog.add_function("blog", "post", ACTOR)
    rid = svc.releases.start(APP, ReleaseCreate(candidate={"cart": "v2"}), ACTOR).id
    svc.releases.advance(rid, Tick(env.clock()))

    everything = svc.audit.events()
    ids = [e.id for e in everything]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert [ev for ev, _ in sunk] == everything  # sinks saw each committed event
    shop = svc.audit.events(app=APP)
    blog = svc.audit.events(app="blog")
    assert {e.app for e in shop} == {APP}
    assert [e.kind for e in blog] == ["app_created", "function_added"]
    assert len(shop) + len(blog) == len(everything)
    release = svc.audit.events(release_id=rid)
    assert [e.kind for e in release] == ["created", "started"]
    assert all(e.release_id == rid for e in release)
    assert svc.audit.events(app="blog", release_id=rid) == []
    assert all(e.release_id is None for e in shop if e.kind not in ("created", "started"))

    # paging: `after` is the last id seen; `limit` bounds a page
    pages: list[EventRecord] = []
    after = 0
    while page := svc.audit.events(app=APP, after=after, limit=3):
        assert len(page) <= 3
        pages.extend(page)
        after = page[-1].id
    assert pages == shop
    assert svc.audit.events(after=everything[-1].id) == []
    assert svc.audit.events(after=everything[-2].id) == everything[-1:]

    with pytest.raises(NotFound, match="no app named 'nope'"):
        svc.audit.events(app="nope")
    with pytest.raises(NotFound, match="no release with id 'shop-9'"):
        svc.audit.events(release_id="shop-9")


def test_sinks_get_webhooks_and_a_failing_sink_harms_nothing(sqlite_url: str) -> None:
    hook = "https://hooks.example/coalmine"
    with open_env(sqlite_url) as env:
        seen: list[tuple[str, list[str]]] = []

        def broken(ev: EventRecord, hooks: list[str]) -> None:
            raise RuntimeError("sink down")

        svc = ControlPlane(
            env.store,
            env.feed,
            clock=env.clock,
            sinks=[broken, lambda ev, hooks: seen.append((ev.kind, hooks))],
        )
        svc.catalog.apply(shop_spec(webhooks=[hook]), ACTOR)
        svc.catalog.register_version(APP, "cart", VersionCreate(name="v9", target="m:h9"), ACTOR)
        assert seen[-1] == ("version_registered", [hook])
        assert [v.name for v in svc.catalog.get_app(APP).functions[0].versions][-1] == "v9"

        told = len(seen)
        spec = shop_spec(webhooks=[hook])
        spec.functions["cart"].versions["v8"] = "m:h8"
        assert svc.catalog.apply(spec, ACTOR, dry_run=True).changed
        assert len(seen) == told  # a dry run tells no sink
