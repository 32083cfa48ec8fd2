"""The snapshot cache: held until the feed (or a moved revision) says the app changed, never late.

Over real stores: a change made through the plane drops the app's snapshot
before the write returns; a load overtaken by a change is not kept; while
PostgreSQL's LISTEN is down nothing is held; another process's change is
found by the revalidation; memory stays within its bounds.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import text

from coalmine.controller.plane import ControlPlane
from coalmine.controller.schemas import VersionCreate
from coalmine.controller.snapshots import SnapshotService
from coalmine.core.errors import NotFound
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.store.changes import ChangeFeed
from coalmine.store.db import Store, open_store
from coalmine.web.snapshot_cache import SnapshotCache


class CountingSnapshots(SnapshotService):
    """The real service, counting its loads; ``gate`` (when set) holds each load until opened."""

    def __init__(self, plane: ControlPlane) -> None:
        super().__init__(plane.uow)
        self.loads = 0
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def snapshot(self, app_name: str) -> RoutingSnapshot:
        self.loads += 1
        got = super().snapshot(app_name)  # read before waiting: the read is what may be stale
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        return got


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    s = open_store(database_url)
    yield s
    s.dispose()


@asynccontextmanager
async def cache_over(
    store: Store, **kwargs: Any
) -> AsyncIterator[tuple[ControlPlane, CountingSnapshots, SnapshotCache]]:
    feed = ChangeFeed(store)
    plane = ControlPlane(store, feed)
    snapshots = CountingSnapshots(plane)
    cache = SnapshotCache(snapshots, feed, revalidate=kwargs.pop("revalidate", 3600), **kwargs)
    await asyncio.to_thread(feed.start)
    cache.start()
    try:
        yield plane, snapshots, cache
    finally:
        await cache.stop()
        await asyncio.to_thread(feed.stop)


def add_version(plane: ControlPlane, app: str, name: str) -> None:
    plane.catalog.register_version(
        app, "api", VersionCreate(name=name, target=f"shop.api_{name}:handler"), "test"
    )


def make_app(plane: ControlPlane, app: str = "shop") -> None:
    plane.catalog.create_app(app, "test")
    plane.catalog.add_function(app, "api", "test")
    settle(plane)


def settle(plane: ControlPlane) -> None:
    """Return once the feed's other subscribers have heard every change committed so far.

    On PostgreSQL the cache hears this process's changes at once and again when
    LISTEN echoes them (each echo drops the snapshot once more): a test that
    counts loads waits for the echoes. Notices arrive in commit order, so once
    a marker committed last is heard, every echo before it was.
    """
    feed = plane.uow.feed
    assert feed is not None
    heard = threading.Event()
    unsubscribe = feed.subscribe(lambda app: heard.set() if app == "settled-marker" else None)
    try:
        with plane.store.transaction() as s:
            feed.mark(s, "settled-marker")
        assert heard.wait(10)
    finally:
        unsubscribe()


async def test_held_until_a_change_and_the_change_seen_by_the_next_read(store: Store) -> None:
    async with cache_over(store) as (plane, snapshots, cache):
        make_app(plane)
        first = await cache.get("shop")
        assert first.snapshot == plane.snapshots.snapshot("shop")
        for _ in range(50):
            assert await cache.get("shop") is first
        assert snapshots.loads == 1  # 51 reads, one load

        await asyncio.to_thread(add_version, plane, "shop", "v2")  # returns once committed
        second = await cache.get(
            "shop"
        )  # no wait: the notice dropped it before the commit returned
        assert second.snapshot.revision > first.snapshot.revision
        assert "v2" in second.snapshot.targets["api"]
        assert snapshots.loads == 2


async def test_concurrent_readers_share_one_load_and_unknown_apps_are_not_held(
    store: Store,
) -> None:
    async with cache_over(store) as (plane, snapshots, cache):
        make_app(plane)
        got = await asyncio.gather(*(cache.get("shop") for _ in range(20)))
        assert all(g is got[0] for g in got)
        assert snapshots.loads == 1
        for _ in range(2):
            with pytest.raises(NotFound):
                await cache.get("nope")
        assert snapshots.loads == 3
        assert len(cache) == 1


async def test_a_load_overtaken_by_a_change_answers_its_readers_but_is_not_kept(
    store: Store,
) -> None:
    async with cache_over(store) as (plane, snapshots, cache):
        make_app(plane)
        snapshots.gate = threading.Event()
        early = asyncio.create_task(cache.get("shop"))
        assert await asyncio.to_thread(snapshots.entered.wait, 10)  # it has read the old state
        await asyncio.to_thread(add_version, plane, "shop", "v2")  # committed and told meanwhile
        await asyncio.to_thread(settle, plane)
        late = asyncio.create_task(cache.get("shop"))  # came after the notice: a new load
        snapshots.gate.set()
        old, new = await early, await late
        assert "v2" not in old.snapshot.targets["api"]  # the reader that came first: the old
        assert "v2" in new.snapshot.targets["api"]
        assert snapshots.loads == 2
        assert await cache.get("shop") is new  # only the newer one was kept
        assert snapshots.loads == 2


async def test_listeners_hear_each_dropped_app(store: Store) -> None:
    async with cache_over(store) as (plane, _, cache):
        make_app(plane)
        await cache.get("shop")
        heard: list[str] = []
        unsubscribe = cache.subscribe(heard.append)
        await asyncio.to_thread(add_version, plane, "shop", "v2")
        assert heard[:1] == ["shop"]  # at once, before the write returned (then maybe its echo)
        await asyncio.to_thread(add_version, plane, "shop", "v3")
        unsubscribe()
        told = len(heard)  # on PostgreSQL LISTEN's echoes may have come too
        await asyncio.to_thread(add_version, plane, "shop", "v4")
        await asyncio.to_thread(settle, plane)
        assert told >= 2
        assert heard == ["shop"] * told


async def test_another_process_change_is_found_by_the_revalidation(sqlite_url: str) -> None:
    """A writer whose commits this feed cannot hear (another process on the SQLite file)."""
    store = open_store(sqlite_url)
    other = open_store(sqlite_url)
    try:
        async with cache_over(store, revalidate=0.05) as (plane, _, cache):
            make_app(plane)
            before = await cache.get("shop")
            dropped = asyncio.Event()
            loop = asyncio.get_running_loop()
            cache.subscribe(lambda app: loop.call_soon_threadsafe(dropped.set))
            elsewhere = ControlPlane(other, ChangeFeed(other))  # its own feed: not ours
            await asyncio.to_thread(add_version, elsewhere, "shop", "v9")
            await asyncio.wait_for(dropped.wait(), timeout=5)
            after = await cache.get("shop")
            assert after.snapshot.revision > before.snapshot.revision
            assert "v9" in after.snapshot.targets["api"]
    finally:
        store.dispose()
        other.dispose()


async def test_bounded_and_idle_apps_dropped(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    now = [0.0]
    try:
        async with cache_over(store, max_apps=2, idle=10, clock=lambda: now[0]) as (
            plane,
            _,
            cache,
        ):
            for app in ("a", "b", "c"):
                make_app(plane, app)
                await cache.get(app)
            assert len(cache) == 2
            now[0] = 100.0
            await cache.revalidate_now()
            assert len(cache) == 0
    finally:
        store.dispose()


async def test_not_started_holds_nothing(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    try:
        feed = ChangeFeed(store)
        plane = ControlPlane(store, feed)
        snapshots = CountingSnapshots(plane)
        cache = SnapshotCache(snapshots, feed)
        make_app(plane)
        await cache.get("shop")
        await cache.get("shop")
        assert snapshots.loads == 2
        assert len(cache) == 0
    finally:
        store.dispose()


def _kill_listener(store: Store) -> int:
    with store.engine.connect() as conn:
        killed = conn.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
            )
        )
        conn.commit()
    return int(killed or 0)


async def _until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_postgres_nothing_held_while_listen_is_down_and_all_reloaded_after(
    pg_url: str,
) -> None:
    store = open_store(pg_url)
    feed = ChangeFeed(store)
    plane = ControlPlane(store, feed)
    snapshots = CountingSnapshots(plane)
    cache = SnapshotCache(snapshots, feed, revalidate=3600)
    try:
        cache.start()
        make_app(plane)
        # not listening yet: every read loads
        await cache.get("shop")
        await cache.get("shop")
        assert (snapshots.loads, len(cache)) == (2, 0)

        await asyncio.to_thread(feed.start)
        held = await cache.get("shop")
        assert await cache.get("shop") is held
        assert snapshots.loads == 3

        generation = feed.generation
        assert await asyncio.to_thread(_kill_listener, store) == 1
        # once the loss is seen (and again once LISTEN is back), what was held is not used
        await _until(lambda: feed.generation >= generation + 2 and feed.live, timeout=10)
        again = await cache.get("shop")
        assert again is not held
        assert snapshots.loads >= 4
    finally:
        await cache.stop()
        await asyncio.to_thread(feed.stop)
        store.dispose()
