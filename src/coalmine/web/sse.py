"""Server-Sent Events of one app's routing snapshot: the current one, then one per change.

A stream subscribes to the `ChangeFeed` before it reads the first snapshot
(so no change can slip between the two). The feed calls back on another
thread; the callback only wakes the stream's asyncio event through
``loop.call_soon_threadsafe``, so a burst of changes is coalesced into one
re-read, done in the threadpool. Nothing polls: between changes the stream
sleeps on that event, sending a ``: keepalive`` comment each heartbeat.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable

from starlette.concurrency import run_in_threadpool

from coalmine.controller.service import ControlService
from coalmine.core.errors import CoalmineError
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.store.changes import ChangeFeed

__all__ = ["KEEPALIVE", "RETRY_MS", "SnapshotStream", "format_snapshot"]

log = logging.getLogger(__name__)
KEEPALIVE = ": keepalive\n\n"
RETRY_MS = 1000
"""how soon an EventSource reconnects after the stream drops"""


def format_snapshot(snapshot: RoutingSnapshot, *, retry: int | None = None) -> str:
    """One ``snapshot`` event: ``id`` is the revision, ``data`` the snapshot's JSON."""
    data = json.dumps(snapshot.to_dict(), separators=(",", ":"), sort_keys=True)
    head = f"retry: {retry}\n" if retry is not None else ""
    return f"{head}event: snapshot\nid: {snapshot.revision}\ndata: {data}\n\n"


class SnapshotStream:
    """One subscriber: `open` subscribes and reads the snapshot, `events` streams it."""

    def __init__(
        self, service: ControlService, feed: ChangeFeed, app: str, *, heartbeat: float
    ) -> None:
        self.service = service
        self.feed = feed
        self.app = app
        self.heartbeat = heartbeat
        self._changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._first: RoutingSnapshot | None = None

    async def open(self) -> RoutingSnapshot:
        """Subscribe, then read the current snapshot (raises NotFound for an unknown app)."""
        self._loop = asyncio.get_running_loop()
        self._unsubscribe = self.feed.subscribe(self._on_change)
        try:
            self._first = await run_in_threadpool(self.service.routing_snapshot, self.app)
        except BaseException:
            self.close()
            raise
        return self._first

    def _on_change(self, app: str) -> None:
        """Called by the feed on a committing or listening thread."""
        loop = self._loop
        if app != self.app or loop is None or self._unsubscribe is None:
            return
        try:
            loop.call_soon_threadsafe(self._changed.set)
        except RuntimeError:  # the event loop is closed: the stream is gone
            self.close()

    def close(self) -> None:
        """Unsubscribe from the feed (idempotent)."""
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()

    async def events(self) -> AsyncIterator[str]:
        """The SSE text: the first snapshot, then one event per new revision, and keepalives."""
        if self._first is None:
            raise RuntimeError("SnapshotStream.open() must be awaited before events()")
        try:
            last = self._first.revision
            yield format_snapshot(self._first, retry=RETRY_MS)
            while True:
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=self.heartbeat)
                except TimeoutError:
                    yield KEEPALIVE
                    continue
                self._changed.clear()  # changes from here on wake us again
                try:
                    snapshot = await run_in_threadpool(self.service.routing_snapshot, self.app)
                except CoalmineError as exc:
                    log.info("routing stream of %s ends: %s", self.app, exc)
                    return
                except Exception:
                    # End the stream: the client reconnects (after RETRY_MS) and
                    # reads a fresh snapshot; until then it keeps routing (fail static).
                    log.exception("routing stream of %s: cannot read the snapshot", self.app)
                    return
                if snapshot.revision != last:
                    last = snapshot.revision
                    yield format_snapshot(snapshot)
        finally:
            self.close()
