"""The unit of work: one transaction, its audit events, revision bumps and change-feed marks.

Services own transactions and repositories never commit (STYLE.md): a
service opens ``with uow() as work:``, reads and writes through the
repositories on ``work``, records what happened with ``work.event(...)``
and, when the app's routing changed, ``work.changed(app)``. On leaving the
block the transaction commits (or, on any error, rolls back and changes
nothing); only after the commit are the event sinks told, so a webhook never
announces what was not stored. Each release event is also written to the
webhook outbox (`coalmine.store.outbox`), once for each of the app's
webhooks that wants it, in the same transaction: stored events and their
deliveries commit together or not at all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from coalmine.core.records import EventRecord
from coalmine.core.webhook import Webhook
from coalmine.store.alarms import AlarmRepository
from coalmine.store.analysis_runs import AnalysisRunRepository
from coalmine.store.apps import AppRepository
from coalmine.store.changes import ChangeFeed
from coalmine.store.db import Store
from coalmine.store.events import EventRepository
from coalmine.store.metric_windows import MetricWindowRepository
from coalmine.store.models import AppRow, EventRow, ReleaseRow
from coalmine.store.outbox import OutboxRepository
from coalmine.store.releases import ReleaseRepository

__all__ = ["EventSink", "UnitOfWork", "Work"]

log = logging.getLogger(__name__)

EventSink = Callable[[EventRecord, list[str]], None]
"""Told of each committed event with its app's webhook URLs (after the commit)."""


class Work:
    """The repositories of one open transaction, and what it records."""

    def __init__(self, session: Session, clock: Callable[[], float], feed: ChangeFeed | None):
        self.session = session
        self.clock = clock
        self._feed = feed
        self._pending: list[tuple[EventRow, list[Webhook]]] = []
        self.apps = AppRepository(session)
        self.releases = ReleaseRepository(session)
        self.events = EventRepository(session)
        self.runs = AnalysisRunRepository(session)
        self.alarms = AlarmRepository(session)
        self.metrics = MetricWindowRepository(session)
        self.outbox = OutboxRepository(session)

    def event(
        self,
        app: AppRow,
        actor: str,
        kind: str,
        message: str,
        *,
        release: ReleaseRow | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> EventRow:
        """Write an audit event; the sinks hear of it once the transaction commits."""
        row = self.events.add(app.name, actor, kind, message, self.clock(), release, data)
        self._pending.append((row, _webhooks(app)))
        return row

    def changed(self, app: AppRow) -> None:
        """The app's routing changed: bump its revision and mark the change feed."""
        # Incremented by the database, not from the value this transaction read: two
        # transactions changing one app must never commit the same revision (the ETag and
        # the SSE stream skip a revision they have seen, so a lost bump hides a change).
        app.revision = AppRow.revision + 1
        if self._feed is not None:
            self._feed.mark(self.session, app.name)

    def discard(self) -> None:
        """Roll back everything done so far (a dry run); no event is told."""
        self.session.rollback()
        self._pending.clear()

    def _flushed(self) -> list[tuple[EventRecord, list[str]]]:
        self.session.flush()
        pending, self._pending = self._pending, []
        # an app's own events (created, a version registered) are not sent
        self.outbox.add(
            [
                (row.id, webhook)
                for row, webhooks in pending
                if row.release_id is not None
                for webhook in webhooks
                if webhook.wants(row.kind)
            ],
            self.clock(),
        )
        return [
            (EventRepository.record(row), [w.url for w in webhooks]) for row, webhooks in pending
        ]


def _webhooks(app: AppRow) -> list[Webhook]:
    """The app's webhooks; an entry that cannot be read is logged and skipped (the settings
    were checked when written: a release must never fail to move over one)."""
    out = []
    for entry in app.settings.get("webhooks") or []:
        try:
            out.append(Webhook.of(entry))
        except (ValueError, TypeError) as exc:
            log.error("app %s: a webhook skipped: %s", app.name, exc)
    return out


class UnitOfWork:
    """Opens `Work`; see the module docstring."""

    def __init__(
        self,
        store: Store,
        feed: ChangeFeed | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sinks: Iterable[EventSink] = (),
    ) -> None:
        self.store = store
        self.feed = feed
        self.clock = clock
        self.sinks = list(sinks)

    @contextmanager
    def __call__(self, *, snapshot: bool = False) -> Iterator[Work]:
        """One transaction; ``snapshot`` reads several tables as of one commit."""
        begin = self.store.snapshot if snapshot else self.store.transaction
        with begin() as session:
            work = Work(session, self.clock, self.feed)
            yield work
            told = work._flushed()
        for event, hooks in told:
            for sink in self.sinks:
                try:
                    sink(event, hooks)
                except Exception:
                    log.exception("event sink failed")
