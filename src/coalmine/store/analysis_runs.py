"""The analysis runs' repository: one record per interval the judge looked at a release."""

from __future__ import annotations

from sqlalchemy import BigInteger, func, literal, select
from sqlalchemy.orm import Session

from coalmine.core.records import AnalysisRunRecord
from coalmine.core.tracker import Action
from coalmine.core.verdict import Outcome
from coalmine.store.models import AnalysisRunRow, AppRow, ReleaseRow

__all__ = ["AnalysisRunRepository"]


class AnalysisRunRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, row: AnalysisRunRow) -> AnalysisRunRow:
        self.session.add(row)
        self.session.flush()
        return row

    def get(self, run_id: int) -> AnalysisRunRow | None:
        return self.session.get(AnalysisRunRow, run_id)

    def page(self, release_id: str, *, after: int = 0, limit: int = 1000) -> list[AnalysisRunRow]:
        q = (
            select(AnalysisRunRow)
            .where(
                AnalysisRunRow.release_id == release_id,
                AnalysisRunRow.id > literal(after, BigInteger),
            )  # 64-bit
            .order_by(AnalysisRunRow.id)
            .limit(limit)
        )
        return list(self.session.scalars(q))

    def last_of(self, release_ids: list[str]) -> list[AnalysisRunRow]:
        """The latest run of each of ``release_ids`` that has one."""
        latest = (
            select(func.max(AnalysisRunRow.id))
            .where(AnalysisRunRow.release_id.in_(release_ids))
            .group_by(AnalysisRunRow.release_id)
        )
        return list(
            self.session.scalars(select(AnalysisRunRow).where(AnalysisRunRow.id.in_(latest)))
        )

    def last(self, release_id: str) -> AnalysisRunRow | None:
        return self.session.scalar(
            select(AnalysisRunRow)
            .where(AnalysisRunRow.release_id == release_id)
            .order_by(AnalysisRunRow.id.desc())
            .limit(1)
        )

    def counts(self) -> list[tuple[str, str, int]]:
        """``(app, outcome, runs)`` over every stored run: one grouped count, no rows read."""
        q = (
            select(AppRow.name, AnalysisRunRow.outcome, func.count(AnalysisRunRow.id))
            .join(ReleaseRow, ReleaseRow.id == AnalysisRunRow.release_id)
            .join(AppRow, AppRow.id == ReleaseRow.app_id)
            .group_by(AppRow.name, AnalysisRunRow.outcome)
        )
        return [(app, outcome, int(n)) for app, outcome, n in self.session.execute(q)]

    @staticmethod
    def record(row: AnalysisRunRow) -> AnalysisRunRecord:
        return AnalysisRunRecord(
            id=row.id,
            release_id=row.release_id,
            at=row.at,
            window_start=row.window_start,
            window_end=row.window_end,
            outcome=Outcome(row.outcome),
            action=Action(row.action),
            results=dict(row.results or {}),
            applied=row.applied,
        )
