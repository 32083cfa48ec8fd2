"""Event webhooks survive a restart of `coalmine serve`: on SQLite and on PostgreSQL.

A release starts and is rolled back while the app's Teams webhook is down;
the control plane is stopped with both deliveries pending, the receiver comes
up, the control plane starts again, and the receiver gets both messages, in
order, each once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from coalmine.store.db import open_store
from coalmine.store.models import WebhookDeliveryRow
from tests.controller import HttpServer, wait_for
from tests.e2e.harness import Server
from tests.helpers import free_port

APP = "shop"
DOC = """\
app: shop
functions:
  cart:
    current: v1
    versions: {{v1: "shop.cart:v1", v2: "shop.cart:v2"}}
release:
  webhooks:
    - {{url: "http://127.0.0.1:{port}/teams", format: teams}}
"""


def delivery_states(database_url: str) -> list[tuple[str, int]]:
    store = open_store(database_url)
    try:
        with store.transaction() as s:
            rows = s.scalars(select(WebhookDeliveryRow).order_by(WebhookDeliveryRow.id))
            return [(r.state, r.attempts) for r in rows]
    finally:
        store.dispose()


@pytest.mark.slow
def test_pending_deliveries_are_sent_after_a_restart(database_url: str, tmp_path: Path) -> None:
    port = free_port()  # the receiver is down: nothing listens there yet
    doc = tmp_path / "coalmine.yaml"
    doc.write_text(DOC.format(port=port))
    server = Server(database_url).start()
    try:
        server.cli("apply", "-f", str(doc))
        started = server.cli(
            "release", "start", APP, "--set", "cart=v2", "--strategy", "10%:1h, 100%", "--json"
        )
        rid = json.loads(started.stdout)["id"]
        server.wait_for_line("event webhooks: started event", 30)  # an attempt failed
        server.cli("release", "rollback", APP, "--reason", "p99 latency doubled")
        server.await_snapshot(APP, lambda s: (s.get("release") or {}).get("phase") == "rolled_back")
    finally:
        server.stop()
    states = delivery_states(database_url)
    assert [s for s, _ in states] == ["pending", "pending"], "started and rolled_back, unsent"
    assert states[0][1] >= 1, "the first was tried while the receiver was down"

    with HttpServer(port) as receiver:
        again = Server(database_url).start()
        try:
            got = receiver.wait("/teams", 2, timeout=90)
            wait_for(
                lambda: [s for s, _ in delivery_states(database_url)] == ["delivered"] * 2,
                timeout=30,
                what="both deliveries marked delivered",
            )
        finally:
            again.stop()
    assert [r.headers["coalmine-event-kind"] for r in got] == ["started", "rolled_back"]
    assert len(receiver.received) == 2, "each delivery once"
    card = got[1].body["attachments"][0]["content"]
    assert card["body"][0]["text"] == f"{APP}: release {rid} rolled back"
    assert card["body"][1]["items"][1]["text"] == "p99 latency doubled"
