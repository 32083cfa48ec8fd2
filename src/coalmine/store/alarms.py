"""The alarms' repository: the last state of each HTTP-raised alarm of an app."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from coalmine.core.records import AlarmRecord, AlarmState
from coalmine.store.models import AlarmRow

__all__ = ["AlarmRepository"]


class AlarmRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def find(self, app: str, name: str) -> AlarmRow | None:
        return self.session.scalar(
            select(AlarmRow).where(AlarmRow.app == app, AlarmRow.name == name)
        )

    def add(self, row: AlarmRow) -> AlarmRow:
        self.session.add(row)
        return row

    def of_app(self, app: str) -> list[AlarmRow]:
        q = select(AlarmRow).where(AlarmRow.app == app).order_by(AlarmRow.name)
        return list(self.session.scalars(q))

    def firing(self) -> list[AlarmRow]:
        q = select(AlarmRow).where(AlarmRow.state == str(AlarmState.ALARM))
        return list(self.session.scalars(q.order_by(AlarmRow.id)))

    @staticmethod
    def record(row: AlarmRow) -> AlarmRecord:
        return AlarmRecord(
            app=row.app,
            name=row.name,
            state=AlarmState.ALARM if row.state == AlarmState.ALARM else AlarmState.OK,
            reason=row.reason,
            since=row.since,
            updated_at=row.updated_at,
            reported_release=row.reported_release,
        )
