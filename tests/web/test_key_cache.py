"""The key cache: a known key reads no database, a revoked one stops working within its bound.

A revocation through this process's `TokenService` takes effect at once; one
made anywhere else (another replica, ``coalmine token revoke`` on the store)
within `MAX_AGE_SECONDS`, and the revalidation tells the key's watchers (its
open streams) sooner still.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import event

from coalmine.controller.tokens import TokenService
from coalmine.store.db import Store, open_store
from coalmine.web.key_cache import MAX_AGE_SECONDS, KeyCache


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    s = open_store(database_url)
    yield s
    s.dispose()


class Statements:
    """Counts the SELECTs a store runs (a read's BEGIN aside)."""

    def __init__(self, store: Store) -> None:
        self.count = 0
        event.listen(store.engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: object, _cursor: object, statement: str, *_: object) -> None:
        self.count += statement.lstrip().upper().startswith("SELECT")


async def test_a_known_key_is_answered_from_memory(store: Store) -> None:
    tokens = TokenService(store)
    created = tokens.create("web", "viewer")
    keys = KeyCache(tokens, revalidate=3600, max_age=7200)
    keys.start()
    try:
        principal = await keys.authenticate(created.token)
        assert principal is not None
        assert (principal.name, principal.role) == ("web", "viewer")
        statements = Statements(store)
        for _ in range(100):
            assert await keys.authenticate(created.token) == principal
        assert statements.count == 0
        # unknown keys are never held: each asks the store
        assert await keys.authenticate("cm_not-a-key-not-a-key") is None
        assert await keys.authenticate("cm_not-a-key-not-a-key") is None
        assert statements.count == 2
        assert await keys.authenticate("x" * 10_000) is None  # not even hashed
        assert statements.count == 2
        assert len(keys) == 1
    finally:
        await keys.stop()


async def test_a_revocation_here_takes_effect_at_once_and_tells_watchers(store: Store) -> None:
    tokens = TokenService(store)
    created = tokens.create("web", "viewer")
    keys = KeyCache(tokens, revalidate=3600, max_age=7200)
    keys.start()
    try:
        principal = await keys.authenticate(created.token)
        assert principal is not None
        told: list[str] = []
        keys.watch(created.token, principal, lambda: told.append("revoked"))
        unwatch = keys.watch(created.token, principal, lambda: told.append("unwatched"))
        unwatch()
        await asyncio.to_thread(tokens.revoke, created.id)
        assert told == ["revoked"]
        assert await keys.authenticate(created.token) is None
    finally:
        await keys.stop()


async def test_a_revocation_elsewhere_takes_effect_within_the_bound(sqlite_url: str) -> None:
    """Revoked through another store (another process): no notice reaches this cache."""
    here, elsewhere = open_store(sqlite_url), open_store(sqlite_url)
    try:
        tokens = TokenService(here)
        created = tokens.create("w", "viewer")
        keys = KeyCache(tokens)  # the production bounds
        keys.start()
        try:
            principal = await keys.authenticate(created.token)
            assert principal is not None
            watched = asyncio.Event()
            loop = asyncio.get_running_loop()
            keys.watch(created.token, principal, lambda: loop.call_soon_threadsafe(watched.set))

            await asyncio.to_thread(TokenService(elsewhere).revoke, created.id)
            revoked_at = time.monotonic()
            while await keys.authenticate(created.token) is not None:
                assert time.monotonic() - revoked_at < MAX_AGE_SECONDS + 0.2, "still accepted"
                await asyncio.sleep(0.01)
            refused_after = time.monotonic() - revoked_at
            await asyncio.wait_for(watched.wait(), timeout=5)
            told_after = time.monotonic() - revoked_at
        finally:
            await keys.stop()
    finally:
        here.dispose()
        elsewhere.dispose()
    # requests: a hard bound (a key older than MAX_AGE_SECONDS is checked by the request);
    # watchers: the revalidation, every quarter second (with room for a loaded machine)
    assert refused_after < MAX_AGE_SECONDS + 0.2
    assert told_after < 1.0, told_after


async def test_a_key_past_its_age_is_checked_again_by_the_request(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    now = [0.0]
    try:
        tokens = TokenService(store)
        created = tokens.create("w", "viewer")
        keys = KeyCache(tokens, revalidate=0.5, max_age=1.0, clock=lambda: now[0])
        keys.start()
        try:
            assert await keys.authenticate(created.token) is not None
            statements = Statements(store)
            now[0] = 0.9
            assert await keys.authenticate(created.token) is not None
            assert statements.count == 0
            now[0] = 1.1  # not confirmed for longer than max_age: the store is asked
            assert await keys.authenticate(created.token) is not None
            assert statements.count == 1
        finally:
            await keys.stop()
    finally:
        store.dispose()


async def test_bounded_and_idle_keys_dropped(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    now = [0.0]
    try:
        tokens = TokenService(store)
        secrets = [tokens.create(f"k{i}", "viewer").token for i in range(3)]
        keys = KeyCache(tokens, max_keys=2, idle=10, clock=lambda: now[0])
        keys.start()
        try:
            for i, secret in enumerate(secrets):
                now[0] = float(i)
                principal = await keys.authenticate(secret)
                assert principal is not None
            assert len(keys) == 2  # the least recently used went
            keys.watch(secrets[2], principal, lambda: None)
            now[0] = 100.0
            await keys.revalidate_now()
            assert len(keys) == 1  # idle ones dropped, the watched one kept
        finally:
            await keys.stop()
    finally:
        store.dispose()


def test_revalidation_must_come_before_the_age_bound(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    try:
        with pytest.raises(ValueError, match="shorter than max_age"):
            KeyCache(TokenService(store), revalidate=1.0, max_age=1.0)
    finally:
        store.dispose()
