"""The audit log's repository: write one event, read events back.

An event is a record of what happened (a release step, an alarm, an
analysis), never the place to look up what is: release state lives in its
own records.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import BigInteger, literal, select
from sqlalchemy.orm import Session

from coalmine.core.records import EventRecord
from coalmine.store.models import EventRow, ReleaseRow

__all__ = ["EventRepository"]


class EventRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(
        self,
        app: str,
        actor: str,
        kind: str,
        message: str,
        at: float,
        release: ReleaseRow | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> EventRow:
        row = EventRow(
            app=app,
            release_id=release.id if release is not None else None,
            at=at,
            actor=actor,
            kind=str(kind),
            message=message,
            phase=release.phase if release is not None else None,
            exposure=release.exposure if release is not None else None,
            data=dict(data or {}),
        )
        self.session.add(row)
        return row

    def page(
        self,
        *,
        app: str | None = None,
        release_id: str | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> list[EventRecord]:
        # a 64-bit literal: an id past 2^31 is a valid bound even where ids are 32-bit
        q = select(EventRow).where(EventRow.id > literal(after, BigInteger))
        if app is not None:
            q = q.where(EventRow.app == app)
        if release_id is not None:
            q = q.where(EventRow.release_id == release_id)
        q = q.order_by(EventRow.id).limit(limit)
        return [self.record(row) for row in self.session.scalars(q)]

    @staticmethod
    def record(row: EventRow) -> EventRecord:
        return EventRecord(
            id=row.id,
            app=row.app,
            release_id=row.release_id,
            at=row.at,
            actor=row.actor,
            kind=row.kind,
            message=row.message,
            phase=row.phase,
            exposure=row.exposure,
            data=dict(row.data or {}),
        )
