"""Carriers: the context in and out of HTTP headers, message headers and Kafka headers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from coalmine.core.model import Channel, Decision, Reason
from coalmine.sdk import (
    extract_http,
    extract_kafka,
    extract_message,
    inject_http,
    inject_kafka,
    inject_message,
    use,
)

TOKEN = "1.k1.eyJhIjoic2hvcCJ9.AAAAAAAAAAAAAAAAAAAAAA"
OTHER = "1.k1.b3RoZXI.BBBBBBBBBBBBBBBBBBBBBB"
DECISION = Decision("shop", "shop-1", Channel.CANARY, {"api": "v2"}, Reason.COHORT)


@pytest.mark.parametrize(
    "make",
    [dict, httpx.Headers, list],
    ids=["dict", "httpx.Headers", "pairs"],
)
def test_http_round_trip_keeps_other_members(make: Any) -> None:
    empty = make()
    assert inject_http(empty, TOKEN) is empty
    assert extract_http(empty) == TOKEN

    headers = make([("Content-Type", "application/json"), ("Baggage", "userId=alice,tier=gold")])
    inject_http(headers, TOKEN)
    assert extract_http(headers) == TOKEN
    values = [v for k, v in (headers.items() if not isinstance(headers, list) else headers)]
    assert "userId=alice,tier=gold,coalmine=" + TOKEN in values
    # replacing keeps one member; replace=False keeps an explicit one
    inject_http(headers, OTHER)
    assert extract_http(headers) == OTHER
    inject_http(headers, TOKEN, replace=False)
    assert extract_http(headers) == OTHER


def test_http_names_are_case_insensitive_and_several_headers_merge() -> None:
    pairs = [("BAGGAGE", "a=1"), ("x-other", "y"), ("baggage", f"coalmine={OTHER},b=2")]
    assert extract_http(pairs) == OTHER
    inject_http(pairs, TOKEN)
    assert pairs == [("BAGGAGE", f"a=1,b=2,coalmine={TOKEN}"), ("x-other", "y")]
    assert extract_http({"BaGgAgE": f"coalmine={TOKEN}"}) == TOKEN
    assert extract_http(None) is None
    assert extract_http({"baggage": "a=1"}) is None


def test_http_asgi_byte_pairs() -> None:
    scope_headers = [(b"host", b"example"), (b"baggage", b"a=1")]
    inject_http(scope_headers, TOKEN)
    assert scope_headers == [(b"host", b"example"), (b"baggage", f"a=1,coalmine={TOKEN}".encode())]
    assert extract_http(scope_headers) == TOKEN
    fresh: list[tuple[bytes, bytes]] = [(b"host", b"example")]
    inject_http(fresh, TOKEN)
    assert fresh[-1] == (b"baggage", f"coalmine={TOKEN}".encode())


def test_injection_defaults_to_the_current_scope() -> None:
    headers: dict[str, str] = {}
    assert inject_http(headers) == {}  # no scope: nothing to add
    assert inject_message() == {}
    assert inject_kafka() == []
    with use(DECISION, TOKEN):
        assert extract_http(inject_http(headers)) == TOKEN
        assert extract_message(inject_message()) == TOKEN
        assert extract_kafka(inject_kafka()) == TOKEN
    with use(DECISION, None):  # a decision with nothing to propagate
        assert inject_message() == {}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # NATS (nats-py): dict[str, str]
        ({"Nats-Msg-Id": "1"}, {"Nats-Msg-Id": "1", "baggage": f"coalmine={TOKEN}"}),
        # RabbitMQ (pika BasicProperties.headers): may already carry baggage
        ({"baggage": "a=1", "x-retry": 2}, {"baggage": f"a=1,coalmine={TOKEN}", "x-retry": 2}),
        # Redis Streams fields as read back: bytes keys and values
        (
            {b"body": b"{}", b"baggage": b"a=1"},
            {b"body": b"{}", b"baggage": f"a=1,coalmine={TOKEN}".encode()},
        ),
    ],
    ids=["nats", "rabbitmq", "redis-streams"],
)
def test_message_headers_round_trip(headers: dict[Any, Any], expected: dict[Any, Any]) -> None:
    assert inject_message(headers, TOKEN) is headers
    assert headers == expected
    assert extract_message(headers) == TOKEN


def test_message_header_edge_cases() -> None:
    fresh = inject_message(None, TOKEN)
    assert fresh == {"baggage": f"coalmine={TOKEN}"}
    assert extract_message(None) is None
    assert extract_message({"other": "x"}) is None
    kept = {"baggage": f"coalmine={OTHER}"}
    inject_message(kept, TOKEN, replace=False)
    assert extract_message(kept) == OTHER
    merged = {"Baggage": "a=1", "baggage": "b=2"}
    inject_message(merged, TOKEN)
    assert merged == {"Baggage": f"a=1,b=2,coalmine={TOKEN}"}


def test_kafka_header_lists_round_trip() -> None:
    headers = [("trace", b"t"), ("baggage", b"a=1"), ("baggage", b"b=2")]
    assert inject_kafka(headers, TOKEN) is headers
    assert headers == [("trace", b"t"), ("baggage", f"a=1,b=2,coalmine={TOKEN}".encode())]
    assert extract_kafka(headers) == TOKEN
    # confluent-kafka may hand back str values, None values or a dict
    assert extract_kafka([("baggage", f"coalmine={TOKEN}"), ("k", None)]) == TOKEN
    assert extract_kafka({"baggage": f"coalmine={TOKEN}".encode()}) == TOKEN
    assert extract_kafka(None) is None
    assert extract_kafka([("other", b"x")]) is None
    assert inject_kafka(None, TOKEN) == [("baggage", f"coalmine={TOKEN}".encode())]
    pinned = [("baggage", f"coalmine={OTHER}".encode())]
    inject_kafka(pinned, TOKEN, replace=False)
    assert extract_kafka(pinned) == OTHER
