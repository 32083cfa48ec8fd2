"""dispatch: each record runs the version of its own chain; failures are per record and keep order."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from coalmine.core import Channel, Decision, Reason
from coalmine.integrations import MemoryStream
from coalmine.integrations.memory import partition_of
from coalmine.sdk import current_decision, current_token, use
from coalmine.sdk.dispatch import (
    RecordStatus,
    RouteReason,
    consume_and_dispatch,
    dispatch,
)
from coalmine.sdk.publish import publish
from coalmine.sdk.records import kinesis_event_records, read_record
from tests.streams import food
from tests.streams.food import APP, CONSUMER

CANARY_USER, STABLE_USER = food.users_in(0, 1000)[0], food.users_in(9000, 10000)[0]
MID_USER = food.users_in(3000, 6000)[0]  # stable at 30%, canary at 60%


def recorder() -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    calls: list[tuple[str, Any]] = []

    def make(version: str) -> Any:
        def handler(payload: Any) -> str:
            calls.append((version, payload))
            return version

        return handler

    return {"v1": make("v1"), "v2": make("v2")}, calls


def produce(stream: MemoryStream, router: food.StaticRouter, user: str, payload: Any) -> Decision:
    decision = router.decide(APP, user, None)
    with use(decision, router.encode(decision)):
        publish(stream, "t", payload, key=user)
    return decision


def run(stream: MemoryStream, router: Any, handlers: Any, **options: Any) -> Any:
    records = stream.consume("t", "g", "c", max_records=100, timeout=0)
    return dispatch(records, handlers, app=APP, function=CONSUMER, router=router, **options)


@pytest.mark.parametrize("headers", [True, False], ids=["headers", "envelope"])
def test_a_record_runs_its_producers_channel_even_after_exposure_rises(headers: bool) -> None:
    s = MemoryStream(supports_headers=headers)
    r = food.router(3000)
    produce(s, r, MID_USER, {"n": 1})
    produce(s, r, CANARY_USER, {"n": 2})
    r.state = food.state(6000)  # MID_USER is canary from now on, but its event was stable
    handlers, calls = recorder()
    result = run(s, r, handlers)
    assert result.ok
    assert sorted(calls, key=lambda c: c[1]["n"]) == [("v1", {"n": 1}), ("v2", {"n": 2})]
    assert [o.reason for o in result.outcomes] == [RouteReason.CONTEXT] * 2
    assert {o.decision.reason for o in result.outcomes} == {Reason.PINNED}


@pytest.mark.parametrize("headers", [True, False], ids=["headers", "envelope"])
def test_without_context_the_user_key_decides_and_without_key_stable(headers: bool) -> None:
    s = MemoryStream(supports_headers=headers)
    publish(s, "t", {"who": "canary"}, key=CANARY_USER)
    publish(s, "t", {"who": "nobody"})
    s.publish("t", b"raw", key=CANARY_USER)  # not published by coalmine: the record key
    handlers, calls = recorder()
    result = run(s, food.router(3000), handlers)
    assert result.ok
    by_payload = {json.dumps(p) if not isinstance(p, bytes) else p.decode(): v for v, p in calls}
    assert by_payload == {'{"who": "canary"}': "v2", '{"who": "nobody"}': "v1", "raw": "v2"}
    reasons = {o.record.key: o.reason for o in result.outcomes}
    assert reasons[None] is RouteReason.NO_KEY
    assert reasons[CANARY_USER] is RouteReason.USER_KEY


def test_a_version_without_a_handler_fails_and_is_never_run_elsewhere() -> None:
    s = MemoryStream(partitions=1)
    r = food.router(3000)
    produce(s, r, CANARY_USER, {"n": 1})
    produce(s, r, STABLE_USER, {"n": 2})
    handlers, calls = recorder()
    del handlers["v2"]
    result = run(s, r, handlers)
    assert calls == [("v1", {"n": 2})]
    (failure,) = result.failures
    assert failure.status is RecordStatus.NO_HANDLER
    assert failure.version == "v2"
    assert failure.error == (
        "notify-user v2 has no handler in this process (handlers: v1);"
        " the record is not run on another version"
    )


def test_after_a_failure_the_rest_of_its_partition_and_channel_waits() -> None:
    s = MemoryStream(partitions=2)
    r = food.router(3000)
    # two canary users in different partitions, one stable user in the first partition
    canary_a = food.users_in(0, 3000)[0]
    canary_b = next(
        u for u in food.users_in(0, 3000, 40) if partition_of(u, 2) != partition_of(canary_a, 2)
    )
    stable = next(
        u for u in food.users_in(3000, 10000, 40) if partition_of(u, 2) == partition_of(canary_a, 2)
    )
    for n in range(3):
        produce(s, r, canary_a, {"n": n, "u": "a"})
        produce(s, r, canary_b, {"n": n, "u": "b"})
        produce(s, r, stable, {"n": n, "u": "s"})
    handlers, calls = recorder()

    def flaky_v2(payload: Any) -> str:
        if payload == {"n": 1, "u": "a"}:
            raise RuntimeError("boom")
        calls.append(("v2", payload))
        return "v2"

    handlers["v2"] = flaky_v2
    result = run(s, r, handlers)
    status = {(o.record.key, json.loads(o.record.data)["n"]): o.status for o in result.outcomes}
    assert status[canary_a, 0] is RecordStatus.OK
    assert status[canary_a, 1] is RecordStatus.FAILED
    assert status[canary_a, 2] is RecordStatus.SKIPPED  # same partition and channel: waits
    assert all(status[canary_b, n] is RecordStatus.OK for n in range(3))  # other partition
    assert all(status[stable, n] is RecordStatus.OK for n in range(3))  # other channel
    failed = next(o for o in result.outcomes if o.status is RecordStatus.FAILED)
    assert failed.error == "RuntimeError: boom"
    skipped = next(o for o in result.outcomes if o.status is RecordStatus.SKIPPED)
    assert skipped.error is not None
    assert f"record {failed.record.sequence} of partition" in skipped.error
    assert result.batch_item_failures() == {
        "batchItemFailures": [
            {"itemIdentifier": failed.record.sequence},
            {"itemIdentifier": skipped.record.sequence},
        ]
    }
    assert not result.ok
    assert result.count(RecordStatus.OK) == 7


def test_the_handler_runs_in_the_records_scope_so_its_events_carry_the_chain() -> None:
    s = MemoryStream()
    r = food.router(3000)
    produce(s, r, CANARY_USER, {"n": 1})
    seen: list[Any] = []

    def v2(payload: Any) -> None:
        seen.append((current_decision(), current_token()))
        publish(s, "next", {"from": "notify"}, key=CANARY_USER)

    result = run(s, r, {"v2": v2})
    assert result.ok
    decision, token = seen[0]
    assert decision.channel is Channel.CANARY
    assert token is not None
    (downstream,) = s.records("next")
    got_token, user, payload = read_record(downstream)
    assert (got_token, user, payload) == (token, CANARY_USER, {"from": "notify"})
    r.state = food.state(0)  # even at 0% the downstream hop stays canary: pinned
    assert r.decide(APP, CANARY_USER, got_token).channel is Channel.CANARY


def test_a_forged_context_is_ignored_and_the_user_key_decides() -> None:
    s = MemoryStream()
    publish(s, "t", {"n": 1}, key=STABLE_USER, token="forged.token")
    handlers, calls = recorder()
    result = run(s, food.router(3000), handlers)
    assert calls == [("v1", {"n": 1})]
    (o,) = result.outcomes
    assert o.reason is RouteReason.CONTEXT
    assert o.decision.reason is Reason.COHORT
    assert o.decision.detail is not None
    assert "routing context ignored" in o.decision.detail


def test_unreadable_payloads_and_router_errors_are_failures_not_exceptions() -> None:
    s = MemoryStream(partitions=1)
    s.publish("t", b"{not json", key="u", headers={"content-type": "application/json"})

    class Broken:
        def decide(self, app: str, user_key: str | None, context: str | None = None) -> Decision:
            raise RuntimeError("no routing")

    handlers, calls = recorder()
    result = run(s, food.router(3000), handlers)
    assert [o.status for o in result.outcomes] == [RecordStatus.UNREADABLE]
    s2 = MemoryStream()
    s2.publish("t", b"x", key="u")
    records = s2.consume("t", "g", "c", max_records=1, timeout=0)
    result = dispatch(records, handlers, app=APP, function=CONSUMER, router=Broken())
    (o,) = result.outcomes
    assert o.status is RecordStatus.NO_HANDLER
    assert o.error is not None
    assert "router failed: no routing" in o.error
    assert calls == []


def test_async_handlers_are_refused_per_record() -> None:
    s = MemoryStream()
    publish(s, "t", {}, key=STABLE_USER)

    async def v1(payload: Any) -> None:
        return None

    (o,) = run(s, food.router(3000), {"v1": v1}).outcomes
    assert o.status is RecordStatus.FAILED
    assert o.error is not None
    assert "async" in o.error


def test_user_key_can_be_read_from_the_payload() -> None:
    s = MemoryStream()
    s.publish(
        "t",
        json.dumps({"user": CANARY_USER}).encode(),
        headers={"content-type": "application/json"},
    )
    handlers, calls = recorder()
    result = run(
        s,
        food.router(3000),
        handlers,
        user_key=lambda record: json.loads(record.data)["user"],
    )
    assert result.ok
    assert calls[0][0] == "v2"


def test_consume_and_dispatch_acks_only_what_succeeded() -> None:
    s = MemoryStream(partitions=1)
    r = food.router(3000)
    produce(s, r, STABLE_USER, {"n": 1})
    produce(s, r, CANARY_USER, {"n": 2})
    handlers, _ = recorder()
    del handlers["v2"]
    result = consume_and_dispatch(
        s, "t", "g", "c", handlers, app=APP, function=CONSUMER, router=r, timeout=0
    )
    assert result.count(RecordStatus.OK) == 1
    assert s.pending("t", "g") == 1  # the canary record waits for a v2 consumer
    empty = consume_and_dispatch(
        s, "t", "g", "c", handlers, app=APP, function=CONSUMER, router=r, timeout=0
    )
    assert empty.outcomes == ()


def test_a_lambda_kinesis_batch_dispatches_and_answers_a_partial_batch_response() -> None:
    s = MemoryStream(supports_headers=False, partitions=1)
    r = food.router(3000)
    produce(s, r, CANARY_USER, {"n": 1})
    produce(s, r, STABLE_USER, {"n": 2})
    event = {
        "Records": [
            {
                "eventID": f"shardId-000000000000:{rec.sequence}",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/orders",
                "kinesis": {
                    "partitionKey": rec.key,
                    "sequenceNumber": rec.sequence,
                    "data": base64.b64encode(rec.data).decode(),
                },
            }
            for rec in s.records("t")
        ]
    }
    records = kinesis_event_records(event)
    assert [(x.stream, x.partition, x.key) for x in records] == [
        ("orders", "shardId-000000000000", CANARY_USER),
        ("orders", "shardId-000000000000", STABLE_USER),
    ]
    handlers, calls = recorder()
    del handlers["v2"]
    result = dispatch(records, handlers, app=APP, function=CONSUMER, router=r)
    assert calls == [("v1", {"n": 2})]
    assert result.batch_item_failures() == {
        "batchItemFailures": [{"itemIdentifier": records[0].sequence}]
    }
    with pytest.raises(ValueError, match="not a batch event"):
        kinesis_event_records({})


def test_an_envelope_bridged_onto_a_stream_with_headers_is_still_read() -> None:
    kinesis_like, nats_like = MemoryStream(supports_headers=False), MemoryStream()
    r = food.router(3000)
    produce(kinesis_like, r, MID_USER, {"n": 1})
    (record,) = kinesis_like.records("t")
    nats_like.publish("t", record.data, key=record.key)  # a bridge that copies the bytes
    r.state = food.state(6000)
    handlers, calls = recorder()
    result = run(nats_like, r, handlers)
    assert result.ok
    assert calls == [("v1", {"n": 1})]  # still the producer's stable channel
    assert result.outcomes[0].reason is RouteReason.CONTEXT
