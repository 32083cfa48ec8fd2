"""The webhook outbox's repository: deliveries written with their events, claimed, settled.

A delivery is one release event for one webhook. `Work.event`
(`coalmine.store.uow`) adds one for each webhook of the app that wants the
event, in the event's own transaction. The sender claims the oldest pending
delivery of each URL (so each URL hears its events in order) with a lease:
a conditional update that only one sender can win, on SQLite and on
PostgreSQL alike. It then settles it: ``delivered``, another attempt later,
or ``given_up``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, Select, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from coalmine.core.records import EventRecord
from coalmine.core.webhook import Webhook
from coalmine.store.events import EventRepository
from coalmine.store.models import EventRow, WebhookDeliveryRow

__all__ = ["DELIVERED", "GIVEN_UP", "PENDING", "Delivery", "OutboxRepository"]

PENDING = "pending"
DELIVERED = "delivered"
GIVEN_UP = "given_up"

_D = WebhookDeliveryRow
_ERROR = 1000
"""characters of a failed attempt's error kept"""


@dataclass(frozen=True, slots=True)
class Delivery:
    """A claimed delivery and the event it carries."""

    id: int
    url: str
    format: str
    attempts: int
    """attempts begun, this one included"""
    created_at: float
    event: EventRecord


class OutboxRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, deliveries: list[tuple[int, Webhook]], now: float) -> None:
        """A pending delivery of each (event id, webhook), in one statement."""
        if not deliveries:
            return
        self.session.execute(
            insert(_D),
            [
                {
                    "event_id": event_id,
                    "url": webhook.url,
                    "format": str(webhook.format),
                    "state": PENDING,
                    "created_at": now,
                    "attempts": 0,
                    "next_at": now,
                }
                for event_id, webhook in deliveries
            ],
        )

    def _heads(self) -> Select[int]:
        """The id of the oldest pending delivery of each URL: the only one it may be sent."""
        return select(func.min(_D.id)).where(_D.state == PENDING).group_by(_D.url)

    def due(self, now: float, limit: int) -> list[int]:
        """Ids of the deliveries to try now: the oldest pending one of each URL, if it is
        due and no sender holds it."""
        q = (
            select(_D.id)
            .where(
                _D.id.in_(self._heads()),
                _D.next_at <= now,
                or_(_D.lease_until.is_(None), _D.lease_until <= now),
            )
            .order_by(_D.id)
            .limit(limit)
        )
        return list(self.session.scalars(q))

    def next_due(self) -> float | None:
        """When a delivery may next be tried: the earliest time a URL's oldest pending one is
        due and free of any lease (None: nothing is pending). The ones behind it wait for it."""
        heads = self.session.execute(
            select(_D.next_at, _D.lease_until).where(_D.id.in_(self._heads()))
        ).all()
        return min((max(n, lease or n) for n, lease in heads), default=None)

    def claim(self, delivery_id: int, now: float, lease: float, by: str) -> Delivery | None:
        """Take a delivery for ``lease`` seconds and count an attempt; None when another
        sender holds it or it is settled."""
        taken = cast(
            "CursorResult[Any]",
            self.session.execute(
                update(_D)
                .where(
                    _D.id == delivery_id,
                    _D.state == PENDING,
                    or_(_D.lease_until.is_(None), _D.lease_until <= now),
                )
                .values(lease_until=now + lease, claimed_by=by, attempts=_D.attempts + 1)
                .execution_options(synchronize_session=False)
            ),
        ).rowcount
        if taken != 1:
            return None
        d, event = self.session.execute(
            select(_D, EventRow)
            .join(EventRow, EventRow.id == _D.event_id)
            .where(_D.id == delivery_id)
        ).one()
        return Delivery(
            d.id, d.url, d.format, d.attempts, d.created_at, EventRepository.record(event)
        )

    def delivered(self, delivery_id: int, now: float) -> None:
        """Sent: final, whoever holds the lease (it is never sent again)."""
        self.session.execute(
            update(_D)
            .where(_D.id == delivery_id, _D.state == PENDING)
            .values(state=DELIVERED, done_at=now, lease_until=None, last_error=None)
            .execution_options(synchronize_session=False)
        )

    def failed(
        self, delivery_id: int, by: str, now: float, error: str, retry_at: float | None
    ) -> None:
        """An attempt failed: try again at ``retry_at``, or give up (None). Only the holder of
        the lease settles it (a sender that lost its lease has been overtaken)."""
        values: dict[str, Any] = {"lease_until": None, "last_error": error[:_ERROR]}
        if retry_at is None:
            values |= {"state": GIVEN_UP, "done_at": now}
        else:
            values["next_at"] = retry_at
        self.session.execute(
            update(_D)
            .where(_D.id == delivery_id, _D.state == PENDING, _D.claimed_by == by)
            .values(**values)
            .execution_options(synchronize_session=False)
        )

    def count(self, state: str = PENDING) -> int:
        return self.session.scalar(select(func.count()).where(_D.state == state)) or 0

    def get(self, delivery_id: int) -> WebhookDeliveryRow | None:
        return self.session.get(_D, delivery_id)

    def prune(self, before: float) -> int:
        """Delete the deliveries settled before ``before``; how many."""
        result = self.session.execute(
            delete(_D)
            .where(_D.state != PENDING, _D.done_at < before)
            .execution_options(synchronize_session=False)
        )
        return cast("CursorResult[Any]", result).rowcount
