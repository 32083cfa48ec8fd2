"""The catalog's repository: apps, their functions and their versions."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from coalmine.core.errors import NotFound
from coalmine.store.models import AppRow, FunctionRow, VersionRow

__all__ = ["AppRepository"]

_IN_CHUNK = 500
"""names per ``IN (...)``: within every SQLite's limit of bound parameters"""


class AppRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def find(self, name: str) -> AppRow | None:
        return self.session.scalar(select(AppRow).where(AppRow.name == name))

    def get(self, name: str, *, lock: bool = False) -> AppRow:
        """The app row; ``lock`` holds it until the commit (FOR NO KEY UPDATE on
        PostgreSQL: it serialises writers of the app's release state without
        blocking inserts that merely reference the app)."""
        q = select(AppRow).where(AppRow.name == name)
        row = self.session.scalar(q.with_for_update(key_share=True) if lock else q)
        if row is None:
            raise NotFound(f"no app named {name!r}")
        return row

    def by_id(self, app_id: int) -> AppRow:
        row = self.session.get(AppRow, app_id)
        assert row is not None  # a foreign key points at it
        return row

    def revisions(self, names: Collection[str]) -> dict[str, int]:
        """The routing revision of each of these apps that exists, in one read per 500."""
        wanted = sorted(set(names))
        found: dict[str, int] = {}
        for i in range(0, len(wanted), _IN_CHUNK):
            q = select(AppRow.name, AppRow.revision).where(
                AppRow.name.in_(wanted[i : i + _IN_CHUNK])
            )
            found.update((name, revision) for name, revision in self.session.execute(q).all())
        return found

    def all(self) -> Sequence[AppRow]:
        return self.session.scalars(select(AppRow).order_by(AppRow.name)).all()

    def add(self, app: AppRow) -> AppRow:
        self.session.add(app)
        self.session.flush()
        return app

    def find_function(self, app: AppRow, name: str) -> FunctionRow | None:
        return self.session.scalar(
            select(FunctionRow).where(FunctionRow.app_id == app.id, FunctionRow.name == name)
        )

    def function(self, app: AppRow, name: str) -> FunctionRow:
        row = self.find_function(app, name)
        if row is None:
            raise NotFound(f"app {app.name!r} has no function named {name!r}")
        return row

    def functions(self, app: AppRow) -> Sequence[FunctionRow]:
        return self.session.scalars(
            select(FunctionRow).where(FunctionRow.app_id == app.id).order_by(FunctionRow.name)
        ).all()

    def add_function(self, fn: FunctionRow) -> FunctionRow:
        self.session.add(fn)
        self.session.flush()
        return fn

    def version(self, fn: FunctionRow, name: str) -> VersionRow | None:
        return self.session.scalar(
            select(VersionRow).where(VersionRow.function_id == fn.id, VersionRow.name == name)
        )

    def versions(self, fn: FunctionRow) -> Sequence[VersionRow]:
        return self.session.scalars(
            select(VersionRow).where(VersionRow.function_id == fn.id).order_by(VersionRow.id)
        ).all()

    def version_keys(self, app: AppRow) -> set[tuple[str, str]]:
        """(function, version) of every version registered in ``app``, in one read."""
        q = (
            select(FunctionRow.name, VersionRow.name)
            .join(VersionRow, VersionRow.function_id == FunctionRow.id)
            .where(FunctionRow.app_id == app.id)
        )
        return {(f, v) for f, v in self.session.execute(q).all()}

    def add_version(self, version: VersionRow) -> VersionRow:
        self.session.add(version)
        self.session.flush()
        return version
