"""Routing snapshots held in memory, one per app, replaced when the change feed says so.

Discovery, OFREP, the routing endpoint and the SSE streams read snapshots
from here: a poll, and a 304 above all, reads no database. What keeps the
cache from ever serving a change late:

- It subscribes to the `ChangeFeed` (eagerly: this process's own writes at
  once) when it is built, before it reads anything, so no change can fall
  between a read and the subscription.
- A notice drops the app's snapshot at once, under a lock, on the notifying
  thread: before the write that caused it has answered its caller. The next
  reader loads it again; readers that come while it loads wait for that one
  load.
- A load that a notice (or a lost LISTEN connection) overtook may have read
  the state before the change: it answers the readers that were already
  waiting and is not kept. Readers that come after the notice wait for a
  new load.
- While the feed is not live (PostgreSQL's LISTEN connection is down, or not
  yet up) nothing is kept and every read goes to the store, as if there
  were no cache; the feed's generation moves when it comes back, which
  drops what was held before.
- Every `REVALIDATE_SECONDS`, one read of the held apps' revisions drops any
  that moved: the backstop for writers the feed cannot hear (another
  process on the same SQLite file, such as ``python -m coalmine.controller``
  beside ``coalmine serve --no-controller``).

Memory is bounded: at most ``max_apps`` snapshots (the least recently loaded
goes first), and an app no reader asked for in `IDLE_SECONDS` is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from coalmine.controller.snapshots import SnapshotService
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.store.changes import ChangeFeed

__all__ = [
    "IDLE_SECONDS",
    "MAX_APPS",
    "REVALIDATE_SECONDS",
    "CachedSnapshot",
    "SnapshotCache",
]

log = logging.getLogger(__name__)
REVALIDATE_SECONDS = 0.25
"""how often the revisions of the apps held are checked against the store (one read)"""
MAX_APPS = 1024
IDLE_SECONDS = 300.0

Listener = Callable[[str], None]


@dataclass(eq=False)
class CachedSnapshot:
    """One app's snapshot and what the routing endpoint sends of it, rendered once."""

    snapshot: RoutingSnapshot
    _body: bytes | None = field(default=None, repr=False)

    @property
    def etag(self) -> str:
        return self.snapshot.etag

    def body(self) -> bytes:
        """The snapshot's JSON, as `fastapi.responses.JSONResponse` would render it."""
        if self._body is None:
            self._body = json.dumps(
                self.snapshot.to_dict(), ensure_ascii=False, allow_nan=False, separators=(",", ":")
            ).encode()
        return self._body


@dataclass(eq=False)
class _Held:
    cached: CachedSnapshot
    generation: int
    used: float


@dataclass(eq=False)
class _Load:
    future: asyncio.Future[CachedSnapshot]
    generation: int
    """the feed's generation when it began: a reader of a later one does not join it"""
    overtaken: bool = False
    """a notice came while it loaded: what it read may be older than the change"""


class SnapshotCache:
    """The snapshot of each app asked for, as of the last change the feed told."""

    def __init__(
        self,
        snapshots: SnapshotService,
        feed: ChangeFeed,
        *,
        max_apps: int | None = None,
        revalidate: float | None = None,
        idle: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``None``: the module's `MAX_APPS`, `REVALIDATE_SECONDS`, `IDLE_SECONDS`."""
        self.snapshots = snapshots
        self.feed = feed
        self.max_apps = MAX_APPS if max_apps is None else max_apps
        self.revalidate = REVALIDATE_SECONDS if revalidate is None else revalidate
        self.idle = IDLE_SECONDS if idle is None else idle
        self.clock = clock
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}
        self._loading: dict[str, _Load] = {}
        self._listeners: list[Listener] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._revalidation: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = feed.subscribe(self._changed, eager=True)

    # readers -------------------------------------------------------------
    async def get(self, app: str) -> CachedSnapshot:
        """The app's snapshot (raises `coalmine.core.errors.NotFound` for an unknown app)."""
        feed = self.feed
        if self._revalidation is None or not feed.live:  # nothing held can be trusted
            return CachedSnapshot(await run_in_threadpool(self.snapshots.snapshot, app))
        generation = feed.generation
        start = False
        with self._lock:
            held = self._held.get(app)
            if held is not None and held.generation == generation:
                held.used = self.clock()
                return held.cached
            load = self._loading.get(app)
            if load is None or load.generation != generation:
                future = asyncio.get_running_loop().create_future()
                load = self._loading[app] = _Load(future, generation)
                start = True
        if start:
            task = asyncio.get_running_loop().create_task(self._load(app, load))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # shielded: a reader that goes away must not cancel the load the others wait for
        return await asyncio.shield(load.future)

    async def _load(self, app: str, load: _Load) -> None:
        try:
            snapshot = await run_in_threadpool(self.snapshots.snapshot, app)
        except asyncio.CancelledError:
            self._loaded(app, load)
            load.future.cancel()
            raise
        except Exception as exc:  # NotFound above all: every waiter gets it
            self._loaded(app, load)
            load.future.set_exception(exc)
            load.future.exception()  # retrieved, even if every waiter has gone
            return
        cached = CachedSnapshot(snapshot)
        with self._lock:
            if self._loading.get(app) is load:
                del self._loading[app]
            feed = self.feed
            if (
                not load.overtaken
                and feed.live
                and feed.generation == load.generation
                and self._revalidation is not None
            ):
                if app not in self._held and len(self._held) >= self.max_apps:
                    del self._held[next(iter(self._held))]  # the least recently loaded
                self._held[app] = _Held(cached, load.generation, self.clock())
        load.future.set_result(cached)

    def _loaded(self, app: str, load: _Load) -> None:
        with self._lock:
            if self._loading.get(app) is load:
                del self._loading[app]

    # changes -------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(app)`` each time the app's snapshot is dropped for a change.

        It runs on the thread that found out (a committing thread, the feed's
        listener, the event loop): keep it short and thread-safe.
        """
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def _changed(self, app: str, *, only: _Held | None = None) -> None:
        with self._lock:
            held = self._held.get(app)
            if only is not None and held is not only:
                return  # already replaced by a newer load
            if held is not None:
                del self._held[app]
            load = self._loading.pop(app, None)
            if load is not None:
                load.overtaken = True
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(app)
            except Exception:  # one bad listener must not starve the others
                log.exception("snapshot cache listener failed")

    # revalidation ----------------------------------------------------------
    def start(self) -> None:
        """Start holding snapshots (on the running event loop); until then every read loads."""
        if self._revalidation is None:
            loop = asyncio.get_running_loop()
            self._revalidation = loop.create_task(self._revalidate_forever())

    async def stop(self) -> None:
        """Stop holding snapshots and unsubscribe from the feed."""
        task, self._revalidation = self._revalidation, None
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with self._lock:
            self._held.clear()

    async def _revalidate_forever(self) -> None:
        while True:
            await asyncio.sleep(self.revalidate)
            try:
                await self.revalidate_now()
            except Exception:
                log.warning("cannot check the revisions of the snapshots held", exc_info=True)

    async def revalidate_now(self) -> None:
        """Drop every held snapshot whose app's revision moved (or that is gone or idle)."""
        now = self.clock()
        with self._lock:
            for app in [a for a, h in self._held.items() if now - h.used > self.idle]:
                del self._held[app]
            held = dict(self._held)
        if not held:
            return
        revisions = await run_in_threadpool(self.snapshots.revisions, list(held))
        for app, entry in held.items():
            current = revisions.get(app)
            if current != entry.cached.snapshot.revision:
                log.info("app %s changed without a notice (another process?): reloading", app)
                self._changed(app, only=entry)

    def __len__(self) -> int:
        return len(self._held)
