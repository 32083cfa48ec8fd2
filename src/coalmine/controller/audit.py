"""The audit log, read: every event of an app or a release, oldest first."""

from __future__ import annotations

from coalmine.core.records import EventRecord
from coalmine.store.uow import UnitOfWork

__all__ = ["AuditLog"]


class AuditLog:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    def events(
        self,
        *,
        app: str | None = None,
        release_id: str | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> list[EventRecord]:
        """Events after the id ``after`` (paging), of one app and/or one release."""
        with self.uow() as w:
            if app is not None:
                w.apps.get(app)
            if release_id is not None:
                w.releases.get(release_id)
            return w.events.page(app=app, release_id=release_id, after=after, limit=limit)
