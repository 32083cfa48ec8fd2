"""The article's second failure, on every broker: a stream hop as consistent as an HTTP hop.

`place-order` v1/v2 publishes ``order_placed``; `notify-user` v1/v2 consumes
it, and v2 needs ``delivery_eta``, which only place-order v2 sends. A
user-mode release at 30%, raised to 60% after half the orders: every record
reaches the notify-user version of its own chain and nothing fails. The same
run in request mode (each hop rolls on its own, as a Lambda weighted alias)
fails, as the article says it does.
"""

from __future__ import annotations

import time
from typing import Any

from coalmine.core import RouteMode, bucket
from coalmine.core.ports import Stream
from coalmine.sdk.dispatch import DispatchResult, RecordOutcome, consume_and_dispatch
from coalmine.sdk.records import read_record
from tests.integrations.conftest import MakeStream
from tests.streams import food
from tests.streams.food import APP, CONSUMER, NOTIFY_USER, SALT

ORDERS = 120


def consume_all(stream: Stream, topic: str, router: Any, want: int) -> list[RecordOutcome]:
    """notify-user's consumer: dispatch until ``want`` records have an outcome."""
    outcomes: list[RecordOutcome] = []
    deadline = time.monotonic() + 30
    while len(outcomes) < want and time.monotonic() < deadline:
        result: DispatchResult = consume_and_dispatch(
            stream,
            topic,
            "notify-user",
            "c1",
            NOTIFY_USER,
            app=APP,
            function=CONSUMER,
            router=router,
            max_records=25,
            timeout=0.5,
        )
        outcomes += result.outcomes
    return outcomes


def run(stream: Stream, topic: str, mode: RouteMode) -> tuple[dict[str, str], list[RecordOutcome]]:
    """Place the orders, raising exposure half way; returns (order -> place-order version, outcomes)."""
    router = food.router(3000, mode=mode, seed=42)
    produced: dict[str, str] = {}
    users = [f"customer-{i}" for i in range(ORDERS)]
    for i, user in enumerate(users[: ORDERS // 2]):
        produced[f"o-{i}"] = food.place_order(stream, topic, router, user, f"o-{i}")
    outcomes = consume_all(stream, topic, router, 20)  # some consumed before the change
    router.state = food.state(6000, mode=mode)
    for i, user in enumerate(users[ORDERS // 2 :], start=ORDERS // 2):
        produced[f"o-{i}"] = food.place_order(stream, topic, router, user, f"o-{i}")
    outcomes += consume_all(stream, topic, router, ORDERS - len(outcomes))
    return produced, outcomes


def order_of(outcome: RecordOutcome) -> str:
    payload = read_record(outcome.record)[2]
    return str(payload["order_id"])


def test_user_mode_keeps_every_chain_on_one_version(make_stream: MakeStream, topic: str) -> None:
    stream = make_stream()
    produced, outcomes = run(stream, topic, RouteMode.USER)
    assert len(outcomes) == ORDERS
    assert sorted(map(order_of, outcomes)) == sorted(produced)
    mismatched = [o for o in outcomes if o.version != produced[order_of(o)]]
    assert mismatched == [], "a record reached the other channel's version"
    assert [o.error for o in outcomes if not o.ok] == []
    versions = {o.version for o in outcomes}
    assert versions == {"v1", "v2"}
    # the test means something: some first-half users moved to canary at 60%,
    # and their in-flight v1 events still went to notify-user v1
    moved = [
        o
        for o in outcomes
        if 3000 <= bucket(SALT, o.record.key or "") < 6000 and produced[order_of(o)] == "v1"
    ]
    assert moved
    assert {o.version for o in moved} == {"v1"}


def test_request_mode_mixes_versions_and_fails(make_stream: MakeStream, topic: str) -> None:
    stream = make_stream()
    produced, outcomes = run(stream, topic, RouteMode.REQUEST)
    assert len(outcomes) == ORDERS
    failures = [o for o in outcomes if not o.ok]
    assert len(failures) > 0
    article = [o for o in failures if o.error == "KeyError: 'delivery_eta'"]
    assert article, "a v1 event reached notify-user v2"
    assert all(produced[order_of(o)] == "v1" and o.version == "v2" for o in article)
