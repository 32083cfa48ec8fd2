"""The change feed: subscribers learn which app changed, only once it is committed."""

from __future__ import annotations

import gc
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import text

from coalmine.store.changes import CHANNEL, ChangeFeed
from coalmine.store.db import Store, open_store
from coalmine.store.models import AppRow
from tests.pg_cluster import PgCluster

OUTAGE = 7.0
"""seconds PostgreSQL is down in the outage test: past several reconnection attempts"""


class Boom(Exception):
    pass


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    s = open_store(database_url)
    yield s
    s.dispose()


def wait_until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.01)


def touch(store: Store, feed: ChangeFeed, app: str) -> None:
    """Commit a real change to ``app`` and mark it, as the service does."""
    with store.transaction() as s:
        s.add(AppRow(name=app, settings={}, created_at=1.0))
        feed.mark(s, app)


def abort_after_mark(store: Store, feed: ChangeFeed, app: str) -> None:
    """Change and mark ``app``, then fail: the transaction rolls back."""
    with store.transaction() as s:
        s.add(AppRow(name=app, settings={}, created_at=1.0))
        feed.mark(s, app)
        raise Boom


def test_subscribers_get_each_changed_app_once_after_commit(store: Store) -> None:
    feed = ChangeFeed(store)
    got: list[str] = []
    feed.subscribe(got.append)
    with store.transaction() as s:
        s.add(AppRow(name="shop", settings={}, created_at=1.0))
        feed.mark(s, "shop")
        feed.mark(s, "shop")
        feed.mark(s, "blog")
        assert got == []  # nothing is told before the commit
    assert got == ["blog", "shop"]  # once each, in name order
    with store.transaction() as s:
        s.add(AppRow(name="other", settings={}, created_at=1.0))  # not marked
    assert got == ["blog", "shop"]


def test_a_rolled_back_transaction_delivers_nothing(store: Store) -> None:
    feed = ChangeFeed(store)
    got: list[str] = []
    feed.subscribe(got.append)
    with pytest.raises(Boom):
        abort_after_mark(store, feed, "ghost")
    assert got == []
    touch(store, feed, "shop")  # the aborted mark does not leak into the next commit
    assert got == ["shop"]


def test_a_dropped_feed_and_its_store_are_freed(sqlite_url: str) -> None:
    """SQLAlchemy's listener registry must not keep a feed (and its store) alive."""
    store = open_store(sqlite_url)
    feed = ChangeFeed(store)
    touch(store, feed, "shop")
    feed_ref, store_ref = weakref.ref(feed), weakref.ref(store)
    store.dispose()
    del feed, store
    gc.collect()
    assert feed_ref() is None
    assert store_ref() is None


def test_unsubscribe_and_a_failing_subscriber(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(sqlite_url)
    try:
        feed = ChangeFeed(store)
        first: list[str] = []
        second: list[str] = []

        def broken(app: str) -> None:
            raise RuntimeError(f"cannot handle {app}")

        unsubscribe = feed.subscribe(first.append)
        feed.subscribe(broken)
        feed.subscribe(second.append)
        with caplog.at_level(logging.ERROR, logger="coalmine.store.changes"):
            touch(store, feed, "shop")
        assert first == second == ["shop"]  # the broken one does not starve the others
        assert "change feed subscriber failed" in caplog.text
        unsubscribe()
        unsubscribe()  # twice is harmless
        touch(store, feed, "blog")
        assert first == ["shop"]
        assert second == ["shop", "blog"]
    finally:
        store.dispose()


def test_start_is_a_no_op_on_sqlite(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    try:
        feed = ChangeFeed(store)
        feed.start()
        assert not feed.listening
        got: list[str] = []
        feed.subscribe(got.append)
        touch(store, feed, "shop")
        assert got == ["shop"]  # in-process delivery
        feed.stop()
    finally:
        store.dispose()


def test_postgres_listen_delivers_another_replicas_commits(pg_url: str) -> None:
    writer_store = open_store(pg_url)
    reader_store = open_store(pg_url)
    writer = ChangeFeed(writer_store)
    reader = ChangeFeed(reader_store)
    try:
        seen: list[str] = []
        arrived = {"shop": threading.Event(), "blog": threading.Event()}

        def on_change(app: str) -> None:
            seen.append(app)
            if app in arrived:
                arrived[app].set()

        reader.subscribe(on_change)
        reader.start()
        assert reader.listening

        touch(writer_store, writer, "shop")
        assert arrived["shop"].wait(timeout=1.0), "LISTEN did not deliver within 1 s"

        # A rolled-back transaction notifies nobody. PostgreSQL delivers notices in
        # commit order, so once "blog" (committed after) arrives, "ghost" never will.
        with pytest.raises(Boom):
            abort_after_mark(writer_store, writer, "ghost")
        touch(writer_store, writer, "blog")
        assert arrived["blog"].wait(timeout=1.0)
        assert seen == ["shop", "blog"]
    finally:
        reader.stop()
        writer_store.dispose()
        reader_store.dispose()


def test_a_listening_feed_does_not_also_deliver_its_own_commits_locally(pg_url: str) -> None:
    """With LISTEN on, own changes come back from the server: exactly once, not twice."""
    store = open_store(pg_url)
    feed = ChangeFeed(store)
    try:
        seen: list[str] = []
        done = threading.Event()

        def on_change(app: str) -> None:
            seen.append(app)
            if app == "last":
                done.set()

        feed.subscribe(on_change)
        feed.start()
        touch(store, feed, "shop")
        touch(store, feed, "last")
        assert done.wait(timeout=1.0)
        assert seen == ["shop", "last"]
    finally:
        feed.stop()
        store.dispose()


def test_a_listener_that_reconnects_catches_up_on_missed_changes(pg_url: str) -> None:
    """Notices sent while the LISTEN connection was down are lost by PostgreSQL: after
    reconnecting, the feed tells subscribers about every app so they re-read."""
    writer_store = open_store(pg_url)
    reader_store = open_store(pg_url)
    writer = ChangeFeed(writer_store)
    reader = ChangeFeed(reader_store)
    try:
        touch(writer_store, writer, "shop")  # the app exists before the outage
        arrived = threading.Event()
        reader.subscribe(lambda app: arrived.set() if app == "shop" else None)
        reader.start()
        with writer_store.engine.connect() as conn:
            killed = conn.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                )
            )
            # the change is committed while the listener is (about to be) disconnected
            conn.execute(text("UPDATE apps SET revision = revision + 1 WHERE name = 'shop'"))
            conn.execute(text("SELECT pg_notify(:c, 'shop')"), {"c": CHANNEL})
            conn.commit()
        assert killed == 1
        assert arrived.wait(timeout=5.0), "the change made during the outage never arrived"
    finally:
        reader.stop()
        writer_store.dispose()
        reader_store.dispose()


@pytest.mark.slow
def test_a_listener_is_back_within_a_second_of_postgresql_after_a_long_outage(
    private_pg: PgCluster,
) -> None:
    """However long PostgreSQL was down, a replica hears changes again within about a second
    of its return (rule 4: a rollback reaches every replica within a second), not after a
    reconnection backoff grown to many seconds."""
    url = private_pg.create_database("feed_outage")
    writer_store = open_store(url)
    reader_store = open_store(url)
    writer = ChangeFeed(writer_store)
    reader = ChangeFeed(reader_store)
    try:
        touch(writer_store, writer, "shop")
        heard = threading.Event()
        reader.subscribe(lambda app: heard.set() if app == "shop" else None)
        reader.start()
        assert reader.listening
        private_pg.stop("fast")
        wait_until(lambda: not reader.listening, "the listener noticed the outage")
        time.sleep(OUTAGE)  # deliberate: the listener retries all along
        heard.clear()
        private_pg.start()
        back = time.monotonic()
        with writer_store.transaction() as s:  # a change made as soon as PostgreSQL is back
            s.execute(text("UPDATE apps SET revision = revision + 1 WHERE name = 'shop'"))
            writer.mark(s, "shop")
        assert heard.wait(timeout=15), "the change made after the outage never arrived"
        lag = time.monotonic() - back
        assert lag < 2.5, f"the listener heard {lag:.1f}s after PostgreSQL came back"
    finally:
        reader.stop()
        writer_store.dispose()
        reader_store.dispose()
