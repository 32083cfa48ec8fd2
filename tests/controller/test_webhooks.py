"""Event webhooks: the outbox written with each release event, sent in the background to a
real local server, in the JSON, Slack and Teams formats; retried, given up, and resumed by a
sender over a reopened store (a restart), on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from coalmine.controller.leader import SoleLeadership
from coalmine.controller.loop import Controller
from coalmine.controller.plane import ControlPlane
from coalmine.controller.schemas import EventRead
from coalmine.controller.webhooks import EventWebhooks, shown_url
from coalmine.core.records import EventRecord
from coalmine.integrations.outbound import guarded_transport
from coalmine.store.db import Store, open_store
from coalmine.store.models import WebhookDeliveryRow
from tests.controller import (
    ACTOR,
    FakeClock,
    HttpServer,
    NoHooks,
    closed_port,
    start_release,
    wait_for,
)


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


def sender(store: Store, clock: FakeClock, **options: Any) -> EventWebhooks:
    """A sender on the test's clock: retries are due at once (no backoff), polls often."""
    settings: dict[str, Any] = {"backoff": 0.0, "timeout": 2.0, "poll": 0.05, "clock": clock}
    return EventWebhooks(store, **(settings | options))


@pytest.fixture
def webhooks(store: Store, clock: FakeClock) -> Iterator[EventWebhooks]:
    wh = sender(store, clock)
    wh.start()
    yield wh
    wh.stop()


def deliveries(store: Store) -> list[WebhookDeliveryRow]:
    with store.transaction() as s:
        return list(s.scalars(select(WebhookDeliveryRow).order_by(WebhookDeliveryRow.id)))


def released(svc: ControlPlane, webhooks: list[Any], strategy: str = "10%:0s, 100%") -> str:
    """Start a release of the shop app with ``webhooks`` and tick it as far as it goes."""
    release = start_release(svc, strategy, webhooks=webhooks)
    Controller(svc, leadership=SoleLeadership(), hooks=NoHooks(), clock=svc.clock).tick()
    return release.id


def test_release_events_reach_the_apps_webhooks_in_order(
    store: Store, clock: FakeClock, http_server: HttpServer, webhooks: EventWebhooks
) -> None:
    urls = [http_server.url("/a"), http_server.url("/b")]
    svc = ControlPlane(store, clock=clock, sinks=[webhooks])
    rid = released(svc, urls)
    events = svc.audit.events(release_id=rid)
    assert [e.kind for e in events] == ["created", "started", "step", "promoting", "promoted"]
    for path in ("/a", "/b"):
        got = http_server.wait(path, len(events))
        assert [r.body for r in got] == [EventRead.of(e).model_dump(mode="json") for e in events]
        assert [r.headers["coalmine-event-id"] for r in got] == [str(e.id) for e in events]
        assert got[-1].headers["coalmine-event-kind"] == "promoted"
        assert got[0].headers["content-type"] == "application/json"
    wait_for(lambda: webhooks.pending == 0, what="every delivery marked")
    webhooks.stop()
    assert len(http_server.received) == 2 * len(events), "app events (no release) are not sent"
    assert (webhooks.delivered, webhooks.failed) == (2 * len(events), 0)
    rows = deliveries(store)
    assert [(r.state, r.attempts) for r in rows] == [("delivered", 1)] * (2 * len(events))


def slack_started(e: EventRecord) -> dict[str, Any]:
    """What Slack is sent for the first step of the shop release (10%), written out whole."""
    return {
        "text": "shop: release shop-1 started at 10%: traffic shifted to 10% (step 1 of 2)",
        "blocks": [
            {
                "type": "header",
                "text": {
                    "type": "plain_text",
                    "text": ":rocket: shop: release shop-1 started at 10%",
                    "emoji": True,
                },
            },
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "traffic shifted to 10% (step 1 of 2)"},
                "fields": [
                    {"type": "mrkdwn", "text": "*App*\nshop"},
                    {"type": "mrkdwn", "text": "*Release*\nshop-1"},
                    {"type": "mrkdwn", "text": "*Phase*\nrunning"},
                    {"type": "mrkdwn", "text": "*Exposure*\n10%"},
                ],
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"by {e.actor} at 2023-11-14 22:13:20 UTC (event {e.id})",
                    }
                ],
            },
        ],
    }


def teams_card(body: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.2",
                    "body": body,
                    "msteams": {"width": "Full"},
                },
            }
        ],
    }


def teams_facts(e: EventRecord, phase: str, exposure: str) -> dict[str, Any]:
    facts = [
        ("App", "shop"),
        ("Release", "shop-1"),
        ("Phase", phase),
        ("Exposure", exposure),
        ("By", e.actor),
        ("At", "2023-11-14 22:13:20 UTC"),
        ("Event", str(e.id)),
    ]
    return {"type": "FactSet", "facts": [{"title": t, "value": v} for t, v in facts]}


def test_slack_and_teams_are_told_of_release_steps_in_their_formats(
    store: Store, clock: FakeClock, http_server: HttpServer, webhooks: EventWebhooks
) -> None:
    slack, teams = http_server.url("/slack"), http_server.url("/teams")
    svc = ControlPlane(store, clock=clock, sinks=[webhooks])
    rid = released(svc, [{"url": slack, "format": "slack"}, {"url": teams, "format": "teams"}])
    events = {e.kind: e for e in svc.audit.events(release_id=rid)}
    told = ["started", "step", "promoted"]  # not created, promoting: what a channel reads
    got_slack = http_server.wait("/slack", 3)
    got_teams = http_server.wait("/teams", 3)
    webhooks.stop()
    assert [r.headers["coalmine-event-kind"] for r in got_slack] == told
    assert [r.headers["coalmine-event-kind"] for r in got_teams] == told
    assert len(http_server.received) == 6

    assert got_slack[0].body == slack_started(events["started"])
    assert got_slack[2].body["text"] == (
        "shop: release shop-1 promoted: promoted: the candidate versions are now stable"
    )
    assert got_slack[2].body["blocks"][0]["text"]["text"] == (
        ":white_check_mark: shop: release shop-1 promoted"
    )

    started = events["started"]
    assert got_teams[0].body == teams_card(
        [
            {
                "type": "TextBlock",
                "text": "shop: release shop-1 started at 10%",
                "size": "Large",
                "weight": "Bolder",
                "wrap": True,
                "color": "Default",
            },
            {"type": "TextBlock", "text": "traffic shifted to 10% (step 1 of 2)", "wrap": True},
            teams_facts(started, "running", "10%"),
        ]
    )
    assert got_teams[2].body["attachments"][0]["content"]["body"][0]["color"] == "Good"


def test_a_rollback_is_told_with_its_reason_first(
    store: Store, clock: FakeClock, http_server: HttpServer, webhooks: EventWebhooks
) -> None:
    slack, teams = http_server.url("/slack"), http_server.url("/teams")
    svc = ControlPlane(store, clock=clock, sinks=[webhooks])
    rid = released(
        svc, [{"url": slack, "format": "slack"}, {"url": teams, "format": "teams"}], "10%:1h, 100%"
    )
    assert svc.releases.rollback(rid, ACTOR, "p99 latency doubled")
    Controller(svc, leadership=SoleLeadership(), hooks=NoHooks(), clock=clock).tick()
    rolled_back = svc.audit.events(release_id=rid)[-1]
    assert rolled_back.kind == "rolled_back"
    slack_body = http_server.wait("/slack", 2)[1].body
    teams_body = http_server.wait("/teams", 2)[1].body
    webhooks.stop()

    assert slack_body == {
        "text": "shop: release shop-1 rolled back: p99 latency doubled",
        "blocks": [
            {
                "type": "header",
                "text": {
                    "type": "plain_text",
                    "text": ":rotating_light: shop: release shop-1 rolled back",
                    "emoji": True,
                },
            },
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "*Reason*\n>p99 latency doubled"},
            },
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "rolled back: p99 latency doubled"},
                "fields": [
                    {"type": "mrkdwn", "text": "*App*\nshop"},
                    {"type": "mrkdwn", "text": "*Release*\nshop-1"},
                    {"type": "mrkdwn", "text": "*Phase*\nrolled_back"},
                    {"type": "mrkdwn", "text": "*Exposure*\n0%"},
                ],
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"by {rolled_back.actor} at 2023-11-14 22:13:20 UTC"
                        f" (event {rolled_back.id})",
                    }
                ],
            },
        ],
    }
    assert teams_body == teams_card(
        [
            {
                "type": "TextBlock",
                "text": "shop: release shop-1 rolled back",
                "size": "Large",
                "weight": "Bolder",
                "wrap": True,
                "color": "Attention",
            },
            {
                "type": "Container",
                "style": "attention",
                "items": [
                    {"type": "TextBlock", "text": "Reason", "weight": "Bolder", "wrap": True},
                    {
                        "type": "TextBlock",
                        "text": "p99 latency doubled",
                        "size": "Medium",
                        "weight": "Bolder",
                        "wrap": True,
                    },
                ],
            },
            {"type": "TextBlock", "text": "rolled back: p99 latency doubled", "wrap": True},
            teams_facts(rolled_back, "rolled_back", "0%"),
        ]
    )


def test_a_webhook_may_name_its_events(
    store: Store, clock: FakeClock, http_server: HttpServer, webhooks: EventWebhooks
) -> None:
    url = http_server.url("/ends")
    svc = ControlPlane(store, clock=clock, sinks=[webhooks])
    released(svc, [{"url": url, "format": "slack", "events": ["promoted", "rolled_back"]}])
    (only,) = http_server.wait("/ends", 1)
    wait_for(lambda: webhooks.pending == 0, what="the delivery marked")
    assert only.headers["coalmine-event-kind"] == "promoted"
    assert len(deliveries(store)) == 1, "a delivery only for the events it names"


def test_the_event_commits_before_the_endpoint_answers(
    store: Store, clock: FakeClock, http_server: HttpServer
) -> None:
    http_server.gate.clear()  # the endpoint takes the request and does not answer
    wh = sender(store, clock, timeout=30.0)  # longer than the gate holds an answer (10 s)
    svc = ControlPlane(store, clock=clock, sinks=[wh])
    wh.start()
    try:
        release = start_release(svc, "10%:1h, 100%", webhooks=[http_server.url("/slow")])
        svc.releases.note(release.id, "analysis", "a note", ACTOR)
        (first,) = http_server.wait("/slow", 1)
        assert first.body["kind"] == "created"
        assert wh.delivered == 0
        assert [r.state for r in deliveries(store)] == ["pending", "pending"]
        http_server.gate.set()
        second = http_server.wait("/slow", 2)[1]
        assert second.body["message"] == "a note"
        wait_for(lambda: wh.pending == 0, what="both deliveries marked")
    finally:
        wh.stop()
    assert (wh.delivered, wh.failed) == (2, 0)


def test_events_without_a_release_have_no_delivery(store: Store, clock: FakeClock) -> None:
    svc = ControlPlane(store, clock=clock)
    start_release(svc, "10%:1h, 100%", webhooks=["http://127.0.0.1:9/x"])
    kinds = {e.kind for e in svc.audit.events()}
    assert {"app_created", "version_registered", "created"} <= kinds
    assert len(deliveries(store)) == 1, "only the release's created event"


def test_a_failed_delivery_is_retried_and_settled_once(
    store: Store, clock: FakeClock, http_server: HttpServer, webhooks: EventWebhooks
) -> None:
    svc = ControlPlane(store, clock=clock, sinks=[webhooks])
    start_release(svc, "10%:1h, 100%", webhooks=[http_server.route("/flaky", 500, 502, 200)])
    got = http_server.wait("/flaky", 3)
    wait_for(lambda: webhooks.pending == 0, what="the delivery marked")
    assert len({r.headers["coalmine-event-id"] for r in got}) == 1
    assert (webhooks.delivered, webhooks.failed) == (1, 0)
    ((row),) = deliveries(store)
    assert (row.state, row.attempts, row.last_error) == ("delivered", 3, None)
    assert webhooks.send_due()[0] == 0, "a delivered delivery is never sent again"
    assert len(http_server.at("/flaky")) == 3


def test_an_undeliverable_event_is_given_up_recorded_and_logged(
    store: Store, clock: FakeClock, http_server: HttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = http_server.route("/down/secret-token", 500)
    wh = sender(store, clock, retries=3)
    svc = ControlPlane(store, clock=clock, sinks=[wh])
    with caplog.at_level(logging.INFO, logger="coalmine.controller.webhooks"):
        release = start_release(svc, "10%:1h, 100%", webhooks=[url])
        wh.start()
        wait_for(lambda: wh.failed == 1, what="the delivery given up")
        wh.stop()
    assert len(http_server.at("/down/secret-token")) == 4, "one attempt and 3 retries"
    ((row),) = deliveries(store)
    assert (row.state, row.attempts, row.last_error) == ("given_up", 4, "answered 500")
    assert row.done_at == clock.now
    shown = f"http://127.0.0.1:{http_server.port}/down/…"
    created = svc.audit.events(release_id=release.id)[0]
    assert (
        f"created event {created.id} of release {release.id} not delivered to {shown}"
        f" (answered 500; gave up after 4 attempts; delivery {row.id})"
    ) in caplog.text
    assert "attempt 1 of 4; next in 0s" in caplog.text
    assert "secret-token" not in caplog.text, "a webhook URL's secret is not logged"
    assert wh.send_due()[0] == 0, "a given-up delivery is not tried again"


def test_a_webhook_the_outbound_policy_refuses_is_given_up(
    store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    svc = ControlPlane(store, clock=clock)
    start_release(svc, "10%:1h, 100%", webhooks=["http://169.254.169.254/latest/meta-data/"])
    wh = sender(store, clock, retries=0)
    wh.start()
    try:
        wait_for(lambda: wh.failed == 1, what="the delivery given up")
    finally:
        wh.stop()
    ((row),) = deliveries(store)
    assert row.state == "given_up"
    assert row.last_error is not None
    assert "refused by the outbound policy" in row.last_error
    assert "169.254.169.254, a link-local or metadata address" in row.last_error


def test_an_old_delivery_is_given_up_unsent(
    store: Store, clock: FakeClock, http_server: HttpServer
) -> None:
    svc = ControlPlane(store, clock=clock)
    start_release(svc, "10%:1h, 100%", webhooks=[http_server.url("/late")])
    clock.advance(3601)
    wh = sender(store, clock, max_age=3600)
    wh.start()
    try:
        wait_for(lambda: wh.failed == 1, what="the delivery given up")
    finally:
        wh.stop()
    assert http_server.received == []
    ((row),) = deliveries(store)
    assert (row.state, row.last_error) == ("given_up", "not sent: older than 3600s")


def test_a_url_hears_its_events_in_order_while_another_is_retried(
    store: Store, clock: FakeClock, http_server: HttpServer
) -> None:
    """A failing webhook holds back its own later events, not another webhook's."""
    flaky = http_server.route("/flaky", 500, 200)
    fine = http_server.url("/fine")
    svc = ControlPlane(store, clock=clock)
    release = start_release(svc, "10%:1h, 100%", webhooks=[flaky, fine])
    svc.releases.note(release.id, "analysis", "second", ACTOR)
    wh = sender(store, clock)
    try:
        wh.start()
        got = http_server.wait("/flaky", 3)
        wait_for(lambda: wh.pending == 0, what="every delivery marked")
    finally:
        wh.stop()
    assert [r.body["message"][:6] for r in got] == ["releas", "releas", "second"]
    assert [r.body["message"][:6] for r in http_server.at("/fine")] == ["releas", "second"]


def test_the_sender_sleeps_while_a_urls_oldest_delivery_waits_out_its_backoff(
    store: Store, clock: FakeClock
) -> None:
    """The deliveries behind it are not due either: no busy loop over them."""
    url = f"http://127.0.0.1:{closed_port()}/down"
    svc = ControlPlane(store, clock=clock)
    release = start_release(svc, "10%:1h, 100%", webhooks=[url])
    svc.releases.note(release.id, "analysis", "second", ACTOR)
    client = httpx.Client(transport=guarded_transport())
    wh = sender(store, clock, backoff=60.0, poll=30.0, client=client)
    try:
        assert wh.send_due() == (1, 30.0), "one attempt; then a look after the poll"
        clock.advance(45)
        assert wh.send_due() == (0, 15.0), "nothing until the backoff has passed"
        clock.advance(15)
        assert wh.send_due()[0] == 1
    finally:
        client.close()
    assert [(r.state, r.attempts) for r in deliveries(store)] == [("pending", 2), ("pending", 0)]


def test_two_senders_on_one_store_send_each_delivery_once(
    database_url: str, clock: FakeClock, http_server: HttpServer
) -> None:
    """Two replicas' senders (each its own engine) claim deliveries; none is sent twice."""
    stores = [open_store(database_url), open_store(database_url)]
    urls = [http_server.url(f"/r{n}") for n in range(4)]
    svc = ControlPlane(stores[0], clock=clock)
    release = start_release(svc, "10%:1h, 100%", webhooks=urls)
    for n in range(5):
        svc.releases.note(release.id, "analysis", f"note {n}", ACTOR)
    senders = [sender(st, clock) for st in stores]
    try:
        for wh in senders:
            wh.start()
        wait_for(lambda: senders[0].pending == 0, what="every delivery sent")
    finally:
        for wh in senders:
            wh.stop()
        for st in stores:
            st.dispose()
    assert len(http_server.received) == 4 * 6
    for n in range(4):
        ids = [int(r.headers["coalmine-event-id"]) for r in http_server.at(f"/r{n}")]
        assert len(ids) == 6
        assert ids == sorted(set(ids)), "each event once, in order"
    assert sum(wh.delivered for wh in senders) == 4 * 6


def test_a_restart_sends_what_was_pending_and_nothing_twice(
    database_url: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The receiver is down while the first process runs; the second process sends."""
    port = closed_port()
    url = f"http://127.0.0.1:{port}/hook"
    first = open_store(database_url)
    wh = sender(first, clock, backoff=60.0)
    svc = ControlPlane(first, clock=clock, sinks=[wh])
    with caplog.at_level(logging.INFO, logger="coalmine.controller.webhooks"):
        wh.start()
        rid = released(svc, [{"url": url, "format": "slack"}], "10%:1h, 100%")
        wait_for(lambda: "ConnectError" in caplog.text, what="a failed attempt")
        wh.stop()
    first.dispose()
    reopened = open_store(database_url)
    ((row),) = deliveries(reopened)
    reopened.dispose()
    assert (row.state, row.attempts) == ("pending", 1)

    clock.advance(60)  # the backoff has passed when the control plane is back
    with HttpServer(port) as receiver:
        again = open_store(database_url)
        try:
            wh = sender(again, clock)
            wh.start()
            (got,) = receiver.wait("/hook", 1)
            wait_for(lambda: wh.pending == 0, what="the delivery marked")
            wh.stop()
            assert got.headers["coalmine-event-kind"] == "started"
            assert got.body["text"].startswith(f"shop: release {rid} started at 10%")
            third = sender(again, clock)
            assert third.send_due()[0] == 0, "delivered: a later start sends nothing"
        finally:
            again.dispose()
    assert len(receiver.received) == 1


def test_the_sink_only_wakes_the_sender(sqlite_url: str) -> None:
    """Told of a commit, it returns at once and never raises, even with no sender running."""
    store = open_store(sqlite_url)
    try:
        wh = EventWebhooks(store)
        wh(an_event(1), ["http://127.0.0.1:9/x"])
        wh(an_event(2, release_id=None), ["http://127.0.0.1:9/x"])
        assert wh.pending == 0, "the outbox is written by the transaction, not the sink"
    finally:
        store.dispose()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://hooks.slack.com/services/T00/B00/XXXXsecret",
            "https://hooks.slack.com/services/T00/B00/…",
        ),
        (
            "https://prod-1.westus.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke"
            "?api-version=2016-06-01&sig=SECRET",
            "https://prod-1.westus.logic.azure.com:443/workflows/abc/triggers/manual/paths/…",
        ),
        ("http://user:pw@127.0.0.1:8080/hook", "http://127.0.0.1:8080/…"),
        ("http://[::1]:8080/", "http://[::1]:8080/"),
        ("https://chat.example", "https://chat.example"),
    ],
)
def test_logs_show_a_webhook_without_its_secret(url: str, shown: str) -> None:
    assert shown_url(url) == shown
