"""Event webhooks: release events POSTed in the background to a real local server."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from coalmine.controller.leader import SoleLeadership
from coalmine.controller.loop import Controller
from coalmine.controller.plane import ControlPlane
from coalmine.controller.schemas import EventRead
from coalmine.controller.webhooks import EventWebhooks
from coalmine.core.records import EventRecord
from coalmine.store.db import Store
from tests.controller import FakeClock, HttpServer, NoHooks, start_release


def an_event(n: int, release_id: str | None = "shop-1", kind: str = "step") -> EventRecord:
    return EventRecord(
        id=n,
        app="shop",
        release_id=release_id,
        at=1000.0 + n,
        actor="controller",
        kind=kind,
        message=f"event {n}",
        phase="running",
        exposure=1000,
        data={},
    )


@pytest.fixture
def webhooks() -> Iterator[EventWebhooks]:
    wh = EventWebhooks(backoff=0.01, timeout=2.0)
    wh.start()
    yield wh
    wh.stop()


def test_release_events_reach_the_apps_webhooks_in_order(
    store: Store, clock: FakeClock, http_server: HttpServer, webhooks: EventWebhooks
) -> None:
    urls = [http_server.url("/a"), http_server.url("/b")]
    svc = ControlPlane(store, clock=clock, sinks=[webhooks])
    release = start_release(svc, "10%:0s, 100%", webhooks=urls)
    Controller(svc, leadership=SoleLeadership(), hooks=NoHooks(), clock=clock).tick()
    events = svc.audit.events(release_id=release.id)
    assert [e.kind for e in events] == ["created", "started", "step", "promoting", "promoted"]
    for path in ("/a", "/b"):
        got = http_server.wait(path, len(events))
        assert [r.body for r in got] == [EventRead.of(e).model_dump(mode="json") for e in events]
        assert [r.headers["coalmine-event-id"] for r in got] == [str(e.id) for e in events]
        assert got[-1].headers["coalmine-event-kind"] == "promoted"
    webhooks.stop()
    assert len(http_server.received) == 2 * len(events), "app events (no release) are not sent"
    assert (webhooks.delivered, webhooks.failed) == (2 * len(events), 0)


def test_the_sink_returns_before_the_endpoint_answers(
    http_server: HttpServer, webhooks: EventWebhooks
) -> None:
    http_server.gate.clear()  # the endpoint takes the request and does not answer
    url = http_server.url("/slow")
    webhooks(an_event(1), [url])
    webhooks(an_event(2), [url])
    (first,) = http_server.wait("/slow", 1)
    assert first.body["id"] == 1
    assert webhooks.delivered == 0
    http_server.gate.set()
    http_server.wait("/slow", 2)
    webhooks.stop()
    assert webhooks.delivered == 2


def test_events_without_a_release_are_not_sent(
    http_server: HttpServer, webhooks: EventWebhooks
) -> None:
    webhooks(an_event(1, release_id=None, kind="app_created"), [http_server.url("/x")])
    webhooks(an_event(2), [http_server.url("/x")])
    webhooks.stop()
    assert [r.body["id"] for r in http_server.received] == [2]


def test_a_failed_delivery_is_retried(http_server: HttpServer, webhooks: EventWebhooks) -> None:
    webhooks(an_event(7), [http_server.route("/flaky", 500, 502, 200)])
    got = http_server.wait("/flaky", 3)
    webhooks.stop()
    assert [r.headers["coalmine-event-id"] for r in got] == ["7", "7", "7"]
    assert (webhooks.delivered, webhooks.failed) == (1, 0)


def test_an_undeliverable_event_is_logged_and_never_raises(
    http_server: HttpServer, webhooks: EventWebhooks, caplog: pytest.LogCaptureFixture
) -> None:
    url = http_server.route("/down", 500)
    with caplog.at_level(logging.WARNING, logger="coalmine.controller.webhooks"):
        webhooks(an_event(3, kind="rolled_back"), [url])
        webhooks.stop()
    assert len(http_server.at("/down")) == 4, "one attempt and 3 retries"
    assert webhooks.failed == 1
    assert f"rolled_back event 3 of release shop-1 not delivered to {url}" in caplog.text
    assert "answered 500" in caplog.text


def test_stop_drains_the_queue(http_server: HttpServer) -> None:
    wh = EventWebhooks()
    url = http_server.url("/q")
    for n in range(1, 6):
        wh(an_event(n), [url])  # queued before the thread even starts
    wh.start()
    wh.stop(timeout=5)
    assert [r.body["id"] for r in http_server.received] == [1, 2, 3, 4, 5]
    assert wh.pending == 0
