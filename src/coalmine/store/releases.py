"""The releases' repository: rows of releases, read as `ReleaseRecord`s."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from coalmine.core.errors import NotFound
from coalmine.core.machine import Hook
from coalmine.core.model import Phase, RouteMode, Targeting
from coalmine.core.records import HookConfig, ReleaseRecord
from coalmine.core.strategy import parse_strategy
from coalmine.store.models import ACTIVE_PHASE_VALUES, AppRow, ReleaseRow

__all__ = ["ReleaseRepository"]


class ReleaseRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, release_id: str) -> ReleaseRow:
        row = self.session.get(ReleaseRow, release_id)
        if row is None:
            raise NotFound(f"no release with id {release_id!r}")
        return row

    def active(self, app: AppRow) -> ReleaseRow | None:
        """The release that owns the app (pending to rolling back), if any."""
        return self.session.scalar(
            select(ReleaseRow).where(
                ReleaseRow.app_id == app.id, ReleaseRow.phase.in_(ACTIVE_PHASE_VALUES)
            )
        )

    def all_active(self) -> list[tuple[ReleaseRow, str]]:
        """Every active release with its app's name, oldest first."""
        q = (
            select(ReleaseRow, AppRow.name)
            .join(AppRow, AppRow.id == ReleaseRow.app_id)
            .where(ReleaseRow.phase.in_(ACTIVE_PHASE_VALUES))
            .order_by(ReleaseRow.created_at, ReleaseRow.id)
        )
        return [(row, name) for row, name in self.session.execute(q)]

    def newest(self, app: AppRow | None = None, *, limit: int) -> list[tuple[ReleaseRow, str]]:
        """The latest releases (of one app, or all) with their app's name, newest first."""
        q = select(ReleaseRow, AppRow.name).join(AppRow, AppRow.id == ReleaseRow.app_id)
        if app is not None:
            q = q.where(AppRow.id == app.id)
        q = q.order_by(ReleaseRow.created_at.desc(), ReleaseRow.seq.desc()).limit(limit)
        return [(row, name) for row, name in self.session.execute(q)]

    def latest_of(self, app: AppRow, *, limit: int) -> Sequence[ReleaseRow]:
        """An app's latest releases by sequence number, newest first."""
        return self.session.scalars(
            select(ReleaseRow)
            .where(ReleaseRow.app_id == app.id)
            .order_by(ReleaseRow.seq.desc())
            .limit(limit)
        ).all()

    def next_seq(self, app: AppRow) -> int:
        last = self.session.scalar(
            select(func.max(ReleaseRow.seq)).where(ReleaseRow.app_id == app.id)
        )
        return (last or 0) + 1

    def add(self, row: ReleaseRow) -> ReleaseRow:
        self.session.add(row)
        self.session.flush()
        return row

    @staticmethod
    def write(row: ReleaseRow, release: ReleaseRecord) -> None:
        """Copy what a transition changes from ``release`` onto ``row``."""
        row.phase = str(release.phase)
        row.step = release.step
        row.exposure = release.exposure
        row.next_action_at = release.next_action_at
        row.paused_remaining = release.paused_remaining
        row.reason = release.reason
        row.updated_at = release.updated_at
        row.started_at = release.started_at
        row.finished_at = release.finished_at

    def app_name(self, row: ReleaseRow) -> str:
        name = self.session.scalar(select(AppRow.name).where(AppRow.id == row.app_id))
        assert name is not None  # a foreign key points at it
        return name

    def due(self, now: float) -> list[str]:
        """Ids of releases whose timer has come, oldest first."""
        q = (
            select(ReleaseRow.id)
            .where(ReleaseRow.next_action_at.is_not(None), ReleaseRow.next_action_at <= now)
            .order_by(ReleaseRow.next_action_at)
        )
        return list(self.session.scalars(q))

    def next_due_at(self) -> float | None:
        due: float | None = self.session.scalar(select(func.min(ReleaseRow.next_action_at)))
        return due

    @staticmethod
    def record(row: ReleaseRow, app: str) -> ReleaseRecord:
        t = row.targeting or {}
        return ReleaseRecord(
            id=row.id,
            app=app,
            phase=Phase(row.phase),
            route_mode=RouteMode(row.route_mode),
            salt=row.salt,
            strategy=parse_strategy(row.strategy),
            baseline=dict(row.baseline),
            candidate=dict(row.candidate),
            targeting=Targeting(
                frozenset(t.get("always_canary", ())), frozenset(t.get("never_canary", ()))
            ),
            hooks={Hook(name): HookConfig.of(h) for name, h in (row.hooks or {}).items()},
            analysis=dict(row.analysis or {}),
            exposure=row.exposure,
            step=row.step,
            next_action_at=row.next_action_at,
            paused_remaining=row.paused_remaining,
            reason=row.reason,
            created_by=row.created_by,
            created_at=row.created_at,
            updated_at=row.updated_at,
            finished_at=row.finished_at,
            started_at=row.started_at,
            row_version=row.row_version,
            lambda_alias=row.lambda_alias,
        )
