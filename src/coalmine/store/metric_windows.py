"""The per-version metric windows' repository: lock-and-merge rows, and range reads."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from coalmine.store.models import MetricWindowRow

__all__ = ["MetricWindowRepository", "WindowKey"]

WindowKey = tuple[str, str, str, float]
"""(function, version, channel, start) of one window of an app"""


class MetricWindowRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def locked(
        self, app: str, keys: list[WindowKey], empty: dict[str, Any]
    ) -> list[MetricWindowRow]:
        """The rows of ``keys`` (created with ``empty`` histograms if missing), locked until
        the commit. Callers pass ``keys`` sorted: one lock order, no deadlocks."""
        dialect = self.session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        self.session.execute(
            insert(MetricWindowRow)
            .values(
                [
                    {
                        "app": app,
                        "function": function,
                        "version": version,
                        "channel": channel,
                        "start": start,
                        "requests": 0,
                        "errors": 0,
                        "histogram": empty,
                    }
                    for function, version, channel, start in keys
                ]
            )
            .on_conflict_do_nothing()
        )
        q = (
            select(MetricWindowRow)
            .where(
                MetricWindowRow.app == app,
                tuple_(
                    MetricWindowRow.function,
                    MetricWindowRow.version,
                    MetricWindowRow.channel,
                    MetricWindowRow.start,
                ).in_(keys),
            )
            .order_by(MetricWindowRow.id)
            .with_for_update()
        )
        return list(self.session.scalars(q))

    def totals_many(
        self,
        app: str,
        series: list[tuple[str, str, str]],
        since: float,
        until: float | None,
    ) -> list[tuple[str, str, str, int, int, dict[str, Any]]]:
        """(function, version, channel, requests, errors, histogram) of each window of any
        of ``series`` (function, version, channel) whose start is in [since, until)."""
        return [
            (f, v, c, n, e, h)
            for f, v, c, _, n, e, h in self.windows_many(app, series, since, until)
        ]

    def windows_many(
        self,
        app: str,
        series: list[tuple[str, str, str]],
        since: float,
        until: float | None,
    ) -> list[tuple[str, str, str, float, int, int, dict[str, Any]]]:
        """(function, version, channel, start, requests, errors, histogram) of each window of
        any of ``series`` whose start is in [since, until), oldest first."""
        q = select(
            MetricWindowRow.function,
            MetricWindowRow.version,
            MetricWindowRow.channel,
            MetricWindowRow.start,
            MetricWindowRow.requests,
            MetricWindowRow.errors,
            MetricWindowRow.histogram,
        ).where(
            MetricWindowRow.app == app,
            tuple_(MetricWindowRow.function, MetricWindowRow.version, MetricWindowRow.channel).in_(
                series
            ),
            MetricWindowRow.start >= since,
        )
        if until is not None:
            q = q.where(MetricWindowRow.start < until)
        rows = self.session.execute(q.order_by(MetricWindowRow.start)).all()
        return [(f, v, c, start, n, e, h) for f, v, c, start, n, e, h in rows]
