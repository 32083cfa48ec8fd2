"""Where the gateway's routing snapshots come from: the implementations of `SnapshotSource`.

The port itself, `SnapshotSource` (and `ManagedSource`, a source with a
lifecycle), lives in `coalmine.core.ports` and is re-exported here. The
gateway reads the snapshot of its app once per request through
``snapshot(app)``; it never waits for the control plane. `StaticSource`
holds a fixed snapshot (tests, or a gateway run from a file): the in-memory
one. In production the source is `SyncSource`: the SDK's ``RoutingSync``,
which follows the control plane's routing stream (a rollback arrives within
a second) and keeps the last snapshot when the control plane is down (fail
static).

A source that also has ``start()`` and ``close()`` coroutines (`ManagedSource`)
is started and closed with the gateway's ASGI lifespan.
"""

from __future__ import annotations

import asyncio
import logging
import os

from coalmine.core.ports import ManagedSource, SnapshotSource
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.sdk.sync import DEFAULT_KEEPALIVE, RoutingSync

__all__ = ["ManagedSource", "SnapshotSource", "StaticSource", "SyncSource"]

log = logging.getLogger(__name__)


class StaticSource:
    """A fixed snapshot per app; `set` replaces one (tests use it as a fake control plane)."""

    def __init__(self, *snapshots: RoutingSnapshot) -> None:
        self._snapshots = {s.app: s for s in snapshots}

    def snapshot(self, app: str) -> RoutingSnapshot | None:
        return self._snapshots.get(app)

    def set(self, snapshot: RoutingSnapshot) -> None:
        self._snapshots[snapshot.app] = snapshot

    def clear(self, app: str) -> None:
        self._snapshots.pop(app, None)


class SyncSource:
    """Follows one app on the control plane with the SDK's `RoutingSync`.

    `start` begins following and waits up to ``ready_timeout`` seconds for
    the first snapshot (from the stream, or from ``cache_dir`` when the
    control plane is down); the gateway answers 503 until one arrives.
    """

    def __init__(
        self,
        control_plane_url: str,
        sdk_key: str,
        app: str,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        keepalive: float = DEFAULT_KEEPALIVE,
        ready_timeout: float = 5.0,
    ) -> None:
        self.control_plane_url = control_plane_url
        self.app = app
        self.ready_timeout = ready_timeout
        self._sdk_key = sdk_key
        self._cache_dir = cache_dir
        self._keepalive = keepalive
        self._sync: RoutingSync | None = None

    @property
    def sync(self) -> RoutingSync | None:
        """The running `RoutingSync` (for its ``status``), once started."""
        return self._sync

    def snapshot(self, app: str) -> RoutingSnapshot | None:
        sync = self._sync
        return sync.snapshot(app) if sync is not None else None

    async def start(self) -> None:
        if self._sync is None:
            self._sync = RoutingSync(
                self.control_plane_url,
                self._sdk_key,
                [self.app],
                cache_dir=self._cache_dir,
                keepalive=self._keepalive,
            )
        ready = await asyncio.to_thread(self._sync.wait_for, self.app, self.ready_timeout)
        if not ready:
            status = self._sync.status(self.app)
            log.warning(
                "no routing snapshot of %s from %s yet (%s): answering 503 until one arrives",
                self.app,
                self.control_plane_url,
                status.last_error or "no answer",
            )

    async def close(self) -> None:
        sync, self._sync = self._sync, None
        if sync is not None:
            await asyncio.to_thread(sync.close)
