"""The routing snapshot: what the data plane routes by, read as of one commit.

An app's current versions, every version's target, its latest release, and
the baselines of recently rolled-back releases (a context naming one of
those still routes its canary channel to the baseline; a context of any
older release is stale and never honoured: `RoutingState.stale`). SDKs,
gateways and discovery read it; its ``revision`` is the ETag.
"""

from __future__ import annotations

from collections.abc import Collection

from coalmine.core.model import ROLLED_BACK_PHASES, Phase
from coalmine.core.routing import RoutingState
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.store.uow import UnitOfWork

__all__ = ["SnapshotService"]

_ROLLED_BACK_HISTORY = 10


class SnapshotService:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    def revision(self, app: str) -> int:
        """The app's routing revision: it grows with every change of what routing reads."""
        with self.uow() as w:
            return w.apps.get(app).revision

    def revisions(self, apps: Collection[str]) -> dict[str, int]:
        """The revisions of those of ``apps`` that exist, in one read (a cache's check)."""
        with self.uow(snapshot=True) as w:
            return w.apps.revisions(apps)

    def snapshot(self, app_name: str) -> RoutingSnapshot:
        with self.uow(snapshot=True) as w:
            app = w.apps.get(app_name)
            fns = w.apps.functions(app)
            versions = {fn.name: fn.current_version for fn in fns if fn.current_version}
            targets = {fn.name: {v.name: v.target for v in w.apps.versions(fn)} for fn in fns}
            rows = w.releases.latest_of(app, limit=_ROLLED_BACK_HISTORY + 1)
            latest = rows[0] if rows else None
            rolled_back = {
                r.id: dict(r.baseline) for r in rows[1:] if Phase(r.phase) in ROLLED_BACK_PHASES
            }
            release = w.releases.record(latest, app.name).routing() if latest else None
            state = RoutingState(app.name, versions, release, rolled_back)
            return RoutingSnapshot(state, app.revision, targets)
