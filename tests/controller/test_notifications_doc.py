"""docs/notifications.md's example stays true: its coalmine.yaml applies, and a release of it
writes a delivery of each event to each webhook that wants it, in the webhook's format."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from sqlalchemy import select

from coalmine.controller.leader import SoleLeadership
from coalmine.controller.loop import Controller
from coalmine.controller.plane import ControlPlane
from coalmine.controller.schemas import AppSpec, ReleaseCreate
from coalmine.controller.webhook_messages import message
from coalmine.store.db import open_store
from coalmine.store.events import EventRepository
from coalmine.store.models import EventRow, WebhookDeliveryRow
from tests.controller import ACTOR, FakeClock, NoHooks

PAGE = Path(__file__).resolve().parents[2] / "docs" / "notifications.md"


def test_the_example_applies_and_each_webhook_gets_its_events_in_its_format(
    sqlite_url: str,
) -> None:
    (document,) = re.findall(r"^```yaml\n(.*?)^```", PAGE.read_text(), re.S | re.M)
    spec = AppSpec.model_validate(yaml.safe_load(document))
    clock = FakeClock()
    store = open_store(sqlite_url)
    try:
        svc = ControlPlane(store, clock=clock)
        assert svc.catalog.apply(spec, ACTOR).changed
        assert not svc.catalog.apply(spec, ACTOR).changed, "applying it again changes nothing"
        release = svc.releases.start(
            "food-ordering", ReleaseCreate(candidate={"place-order": "v2"}), ACTOR
        )
        controller = Controller(svc, leadership=SoleLeadership(), hooks=NoHooks(), clock=clock)
        controller.tick()
        svc.releases.rollback(release.id, ACTOR, "p99 latency doubled")
        controller.tick()
        with store.transaction() as s:
            rows = s.execute(
                select(WebhookDeliveryRow, EventRow)
                .join(EventRow, EventRow.id == WebhookDeliveryRow.event_id)
                .order_by(WebhookDeliveryRow.id)
            ).all()
            told: dict[str, list[str]] = {}
            for delivery, event in rows:
                told.setdefault(delivery.format, []).append(event.kind)
                body = message(delivery.format, EventRepository.record(event))
                assert body, "every delivery has its message"
    finally:
        store.dispose()
    assert told == {
        "json": ["created", "started", "rolling_back", "rolled_back"],
        "slack": ["started", "rolled_back"],
        "teams": ["rolled_back"],
    }
