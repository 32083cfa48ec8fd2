"""Server-Sent Events of one app's routing snapshot: the current one, then one per change.

`SnapshotStream.snapshots` is the reusable part (the routing stream renders
snapshots, the discovery stream renders one user's answer from them);
`SnapshotStream.events` is the routing stream's text.

A stream subscribes to the `SnapshotCache` (which follows the `ChangeFeed`)
before it reads the first snapshot, so no change can slip between the two.
The cache tells it on another thread; the callback only wakes the stream's
asyncio event through ``loop.call_soon_threadsafe``, so a burst of changes is
coalesced into one re-read, which every stream of the app shares (the cache
loads the snapshot once). Nothing polls: between changes the stream sleeps
on that event, sending a ``: keepalive`` comment each heartbeat.

A stream outlives the check of the credential that opened it. The `KeyCache`
tells it when the key is found revoked (at once for a revocation made
through this process, within `coalmine.web.key_cache.MAX_AGE_SECONDS` for one
made anywhere else), and it checks again at each wake-up: once revoked, the
stream sends one ``event: revoked`` (`REVOKED_EVENT`) and ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass

from coalmine.controller.tokens import Principal
from coalmine.core.errors import CoalmineError
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.web.key_cache import KeyCache
from coalmine.web.snapshot_cache import SnapshotCache

__all__ = [
    "KEEPALIVE",
    "RETRY_MS",
    "REVOKED_EVENT",
    "Credential",
    "SnapshotStream",
    "format_event",
    "format_snapshot",
]

log = logging.getLogger(__name__)
KEEPALIVE = ": keepalive\n\n"
RETRY_MS = 1000
"""how soon an EventSource reconnects after the stream drops"""
REVOKED_EVENT = (
    "event: revoked\n"
    'data: {"detail":"the key or token of this stream was revoked: reconnect with a valid one"}'
    "\n\n"
)
"""the last message of a stream whose credential was revoked while it was open"""


def format_event(event: str, data: str, *, id: str | None = None, retry: int | None = None) -> str:
    """One SSE message; ``data`` must be one line (compact JSON is)."""
    head = f"retry: {retry}\n" if retry is not None else ""
    ident = f"id: {id}\n" if id is not None else ""
    return f"{head}event: {event}\n{ident}data: {data}\n\n"


def format_snapshot(snapshot: RoutingSnapshot, *, retry: int | None = None) -> str:
    """One ``snapshot`` event: ``id`` is the revision, ``data`` the snapshot's JSON."""
    data = json.dumps(snapshot.to_dict(), separators=(",", ":"), sort_keys=True)
    return format_event("snapshot", data, id=str(snapshot.revision), retry=retry)


@dataclass(frozen=True)
class Credential:
    """The key that opened a stream: the stream ends once it is revoked."""

    keys: KeyCache
    secret: str
    principal: Principal


class SnapshotStream:
    """One subscriber: `open` subscribes and reads the snapshot, `events` streams it."""

    def __init__(
        self,
        cache: SnapshotCache,
        app: str,
        *,
        heartbeat: float,
        credential: Credential | None = None,
    ) -> None:
        self.cache = cache
        self.app = app
        self.heartbeat = heartbeat
        self.credential = credential
        self.revoked = False
        """True once the stream's credential was found revoked (then the stream ends)"""
        self._changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._unwatch: Callable[[], None] | None = None
        self._first: RoutingSnapshot | None = None

    async def open(self) -> RoutingSnapshot:
        """Subscribe, then read the current snapshot (raises NotFound for an unknown app)."""
        self._loop = asyncio.get_running_loop()
        self._unsubscribe = self.cache.subscribe(self._on_change)
        if self.credential is not None:
            c = self.credential
            self._unwatch = c.keys.watch(c.secret, c.principal, self._on_revoked)
        try:
            self._first = (await self.cache.get(self.app)).snapshot
        except BaseException:
            self.close()
            raise
        return self._first

    def _on_change(self, app: str) -> None:
        """Called by the cache on whichever thread found out."""
        if app == self.app:
            self._wake()

    def _on_revoked(self) -> None:
        """Called by the key cache on whichever thread found the key revoked."""
        self.revoked = True
        self._wake()

    def _wake(self) -> None:
        loop = self._loop
        if loop is None or self._unsubscribe is None:
            return
        try:
            loop.call_soon_threadsafe(self._changed.set)
        except RuntimeError:  # the event loop is closed: the stream is gone
            self.close()

    def close(self) -> None:
        """Unsubscribe from the cache and stop watching the key (idempotent)."""
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        unwatch, self._unwatch = self._unwatch, None
        if unsubscribe is not None:
            unsubscribe()
        if unwatch is not None:
            unwatch()

    async def snapshots(self) -> AsyncGenerator[RoutingSnapshot | None, None]:
        """The first snapshot, then a fresh one after each change, and ``None`` at each heartbeat.

        A snapshot is yielded after every wake-up, even when its revision did not
        move: a consumer that renders something else from it (a discovery answer)
        decides what changed. The iterator ends, and unsubscribes, when a re-read
        fails (the client reconnects and reads a fresh snapshot) or the key is
        revoked.
        """
        if self._first is None:
            raise RuntimeError("SnapshotStream.open() must be awaited before snapshots()")
        try:
            yield self._first
            while True:
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=self.heartbeat)
                except TimeoutError:
                    if not await self._still_authorized():
                        return
                    yield None
                    continue
                self._changed.clear()  # changes from here on wake us again
                if not await self._still_authorized():
                    return
                try:
                    snapshot = (await self.cache.get(self.app)).snapshot
                except CoalmineError as exc:
                    log.info("stream of %s ends: %s", self.app, exc)
                    return
                except Exception:
                    # End the stream: the client reconnects (after RETRY_MS) and
                    # reads a fresh snapshot; until then it keeps routing (fail static).
                    log.exception("stream of %s: cannot read the snapshot", self.app)
                    return
                yield snapshot
        finally:
            self.close()

    async def _still_authorized(self) -> bool:
        c = self.credential
        if c is None:
            return True
        if not self.revoked:
            try:
                self.revoked = await c.keys.authenticate(c.secret) is None
            except Exception:
                log.exception("stream of %s: cannot check its credential", self.app)
                return True  # a store hiccup is not a revocation; the next wake-up checks again
        if self.revoked:
            log.info("stream of %s ends: its credential was revoked", self.app)
        return not self.revoked

    async def events(self) -> AsyncIterator[str]:
        """The SSE text: the first snapshot, then one event per new revision, and keepalives."""
        if self._first is None:
            raise RuntimeError("SnapshotStream.open() must be awaited before events()")
        last: int | None = None
        try:
            async with aclosing(self.snapshots()) as snapshots:
                async for snapshot in snapshots:
                    if snapshot is None:
                        yield KEEPALIVE
                    elif last is None:
                        last = snapshot.revision
                        yield format_snapshot(snapshot, retry=RETRY_MS)
                    elif snapshot.revision != last:
                        last = snapshot.revision
                        yield format_snapshot(snapshot)
            if self.revoked:
                yield REVOKED_EVENT
        finally:
            self.close()
