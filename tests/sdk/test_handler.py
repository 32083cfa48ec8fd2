"""The handler decorator: API Gateway events are decided (pinned by an incoming context) and
the handler's outgoing calls carry the decision; batches expose one decision per record."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from coalmine.core import decide, decode_context
from coalmine.core.context import RoutingContext, bind_user
from coalmine.core.model import Channel, Decision, Reason
from coalmine.core.userkey import encode_header
from coalmine.sdk import (
    Client,
    current_decision,
    current_token,
    handler,
    record_decisions,
    wrap,
)
from tests.sdk import APP, KEYRING, HeaderRecorder, MockPlane, make_snapshot

CANARY = Decision(APP, "shop-1", Channel.CANARY, {"api": "v2", "worker": "v1"}, Reason.COHORT)


@pytest.fixture
def client() -> Iterator[Client]:
    mock = MockPlane(make_snapshot(1))
    with Client(
        "http://plane", "sdk-key", apps=[APP], signing_keys=KEYRING, stream=False, http=mock.http()
    ) as c:
        yield c


@pytest.fixture
def server() -> Iterator[HeaderRecorder]:
    with HeaderRecorder() as recorder:
        yield recorder


def _stable_user(client: Client, start: str | None = None) -> str:
    """A user whom the cohort puts in stable (other than ``start``)."""
    snap = client.snapshot(APP)
    assert snap is not None
    return next(
        f"u{i}"
        for i in range(1000)
        if not decide(snap.state, f"u{i}").is_canary and f"u{i}" != start
    )


def _outgoing_context(server: HeaderRecorder) -> RoutingContext:
    got = server.last()
    assert got is not None
    assert len(got) == 1
    assert got[0].startswith("coalmine=")
    ctx = decode_context(got[0].removeprefix("coalmine="), KEYRING, now=time.time())
    assert isinstance(ctx, RoutingContext)
    return ctx


def test_an_api_gateway_event_is_pinned_by_its_incoming_context(
    client: Client, server: HeaderRecorder
) -> None:
    user = _stable_user(client)
    token = client.encode(CANARY, user=user)
    seen: list[Decision | None] = []

    @client.handler(APP, user="x-user-id", function="api")
    def lambda_handler(event: dict[str, Any], context: object) -> dict[str, Any]:
        seen.append(current_decision())
        with httpx.Client() as http:
            http.get(server.url)
        return {"statusCode": 200}

    # REST API (v1): headers and multiValueHeaders, any case
    v1 = {
        "resource": "/orders",
        "httpMethod": "POST",
        "headers": {"X-User-Id": user, "Baggage": f"tier=gold,coalmine={token}"},
        "multiValueHeaders": {"X-User-Id": [user], "Baggage": [f"tier=gold,coalmine={token}"]},
        "body": "{}",
    }
    assert lambda_handler(v1, None) == {"statusCode": 200}
    decision = seen[-1]
    assert decision is not None
    assert (decision.channel, decision.reason, decision.release_id) == (
        Channel.CANARY,
        Reason.PINNED,
        "shop-1",
    )
    ctx = _outgoing_context(server)
    assert (ctx.channel, ctx.release_id, dict(ctx.versions)) == (
        Channel.CANARY,
        "shop-1",
        {"api": "v2", "worker": "v1"},
    )
    assert ctx.binding == bind_user(KEYRING, user)  # the next hop checks it is this user's
    assert current_decision() is None  # only inside the handler

    # the same context in an event of another user grants that user nothing
    other = _stable_user(client, start=user)
    lambda_handler({"headers": {"x-user-id": other, "baggage": f"coalmine={token}"}}, None)
    decision = seen[-1]
    assert decision is not None
    assert (decision.channel, decision.reason) == (Channel.STABLE, Reason.COHORT)
    assert "other_user" in (decision.detail or "")
    assert _outgoing_context(server).binding == bind_user(KEYRING, other)

    # HTTP API (v2): lower-case headers; no context, so the user's own cohort
    v2 = {"version": "2.0", "routeKey": "POST /orders", "headers": {"x-user-id": user}}
    lambda_handler(v2, None)
    decision = seen[-1]
    assert decision is not None
    assert (decision.channel, decision.reason) == (Channel.STABLE, Reason.COHORT)
    assert _outgoing_context(server).channel is Channel.STABLE
    assert lambda_handler.coalmine_app == APP  # type: ignore[attr-defined]
    assert lambda_handler.coalmine_function == "api"  # type: ignore[attr-defined]


def test_plain_events_a_user_function_and_bad_events(
    server: HeaderRecorder, client: Client
) -> None:
    seen: list[tuple[Decision | None, str | None]] = []

    @handler(client, APP, user=lambda event: event.get("user"))
    def fn(event: Any, context: object = None) -> None:
        seen.append((current_decision(), current_token()))

    fn({"user": "alice", "headers": {"BAGGAGE": f"coalmine={client.encode(CANARY, user='alice')}"}})
    decision, token = seen[-1]
    assert decision is not None
    assert decision.reason is Reason.PINNED
    assert token is not None

    for event in ({"headers": None}, {"headers": {"x": 1}}, "not a dict", None):
        fn(event)
        decision, token = seen[-1]
        assert decision is not None
        assert (decision.channel, decision.reason, token) == (Channel.STABLE, Reason.ERROR, None)

    with pytest.raises(TypeError, match="header name"):
        handler(client, APP, user=42)  # type: ignore[arg-type]


def test_an_sqs_batch_exposes_one_decision_per_record(
    client: Client, server: HeaderRecorder
) -> None:
    stable = _stable_user(client)
    token = client.encode(CANARY, user=stable)

    def sqs(user: str, baggage: str | None) -> dict[str, Any]:
        attributes = {"user-id": {"stringValue": user, "dataType": "String"}}
        if baggage is not None:
            attributes["baggage"] = {"stringValue": baggage, "dataType": "String"}
        return {"eventSource": "aws:sqs", "body": "{}", "messageAttributes": attributes}

    event = {"Records": [sqs(stable, f"coalmine={token}"), sqs(stable, None)]}
    seen: list[Any] = []

    @client.handler(APP, user="user-id")
    def consume(event: dict[str, Any], context: object) -> None:
        seen.append(current_decision())  # no single decision for a batch
        for record in record_decisions():
            with record.use(), httpx.Client() as http:
                http.get(server.url)
                seen.append((record.index, record.decision, _outgoing_context(server)))

    consume(event, None)
    assert seen[0] is None
    (_, first, first_out), (_, second, second_out) = seen[1:]
    assert (first.channel, first.reason) == (Channel.CANARY, Reason.PINNED)
    assert first_out.channel is Channel.CANARY
    assert (second.channel, second.reason) == (Channel.STABLE, Reason.COHORT)
    assert second_out.channel is Channel.STABLE
    assert record_decisions() == ()


def test_a_kinesis_batch_reads_the_envelope(client: Client) -> None:
    stable = _stable_user(client)
    token = client.encode(CANARY, user=stable)

    def kinesis(data: bytes) -> dict[str, Any]:
        return {
            "eventSource": "aws:kinesis",
            "kinesis": {"partitionKey": "p", "data": base64.b64encode(data).decode()},
        }

    event = {
        "Records": [
            kinesis(wrap({"user": stable, "order": 1}, token)),
            kinesis(json.dumps({"user": stable, "order": 2}).encode()),  # no envelope
        ]
    }
    got: list[tuple[Channel, Reason, str | None]] = []

    @client.handler(APP, user="user")
    def consume(event: dict[str, Any], context: object) -> None:
        got.extend(
            (r.decision.channel, r.decision.reason, r.decision.release_id)
            for r in record_decisions()
        )

    consume(event, None)
    assert got == [
        (Channel.CANARY, Reason.PINNED, "shop-1"),
        (Channel.STABLE, Reason.COHORT, "shop-1"),
    ]


async def test_async_handlers_are_decorated_too(client: Client, server: HeaderRecorder) -> None:
    token = client.encode(CANARY, user="bob")

    @client.handler(APP, user="x-user-id")
    async def fn(event: dict[str, Any], context: object) -> Channel | None:
        async with httpx.AsyncClient() as http:
            await http.get(server.url)
        d = current_decision()
        return d.channel if d is not None else None

    event = {"headers": {"x-user-id": "bob", "baggage": f"coalmine={token}"}}
    assert await fn(event, None) is Channel.CANARY
    assert _outgoing_context(server).channel is Channel.CANARY

    @client.handler(APP, user="x-user-id")
    async def batch(event: dict[str, Any], context: object) -> int:
        return len(record_decisions())

    assert await batch({"Records": [{"headers": {"x-user-id": "a"}}] * 3}, None) == 3


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(user=st.text(min_size=1, max_size=60))
@example(user="Â®")  # an event's header is text: not the latin-1 reading of "®"'s UTF-8 bytes
def test_a_header_id_is_the_id_the_sdk_decides_for(client: Client, user: str) -> None:
    """A user= header carries percent-encoded UTF-8 (or raw UTF-8), as at the gateway."""

    @handler(client, APP, user="x-user-id")
    def fn(event: dict[str, Any], context: object) -> Decision | None:
        return current_decision()

    expected = client.decide(APP, user)
    got = fn({"headers": {"x-user-id": encode_header(user)}}, None)
    assert got is not None
    assert (got.channel, dict(got.versions)) == (expected.channel, dict(expected.versions))
    if "%" not in user and user == user.strip(" \t"):  # as an API Gateway event holds raw UTF-8
        raw = fn({"headers": {"x-user-id": user}}, None)
        assert raw is not None
        assert raw.channel == expected.channel
