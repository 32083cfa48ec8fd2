"""Per-version metrics in the SDK: the handler decorator counts each invocation (its duration,
exceptions, 5xx answers, failed batch items) for the version it ran, and the client flushes
the counts to the control plane."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from coalmine.core import decide
from coalmine.core.model import Channel, Decision, Reason
from coalmine.sdk import Client, record_decisions
from tests.sdk import APP, KEYRING, MockPlane, make_snapshot, serving

CANARY = Decision(APP, "shop-1", Channel.CANARY, {"api": "v2", "worker": "v1"}, Reason.COHORT)


@pytest.fixture
def client() -> Iterator[Client]:
    mock = MockPlane(make_snapshot(1))
    with Client(
        "http://plane",
        "sdk-key",
        apps=[APP],
        signing_keys=KEYRING,
        stream=False,
        http=mock.http(),
        flush_interval=3600,
    ) as c:
        yield c


def user_in(client: Client, channel: Channel) -> str:
    snap = client.snapshot(APP)
    assert snap is not None
    return next(f"u{i}" for i in range(1000) if decide(snap.state, f"u{i}").channel is channel)


def counts(client: Client, version: str, channel: str, function: str = "api") -> tuple[int, ...]:
    assert client.recorder is not None
    m = client.recorder.total(APP, function, version, channel)
    return (0, 0, 0) if m is None else (m.requests, m.errors, m.histogram.count)


def api_event(user: str, what: str) -> dict[str, Any]:
    return {"headers": {"x-user-id": user, "x-what": what}}


def test_the_decorator_counts_invocations_and_failures_per_version_and_channel(
    client: Client,
) -> None:
    @client.handler(APP, user="x-user-id", function="api")
    def api(event: dict[str, Any], context: object) -> dict[str, Any]:
        what = event["headers"]["x-what"]
        if what == "raise":
            raise ValueError("boom")
        return {"statusCode": 503 if what == "fail" else 200}

    stable, canary = user_in(client, Channel.STABLE), user_in(client, Channel.CANARY)
    for what in ("ok", "ok", "fail"):
        api(api_event(stable, what), None)
    with pytest.raises(ValueError, match="boom"):
        api(api_event(canary, "raise"), None)
    api(api_event(canary, "ok"), None)

    assert counts(client, "v1", "stable") == (3, 1, 3)
    assert counts(client, "v2", "canary") == (2, 1, 2)
    assert client.recorder is not None
    canary_total = client.recorder.total(APP, "api", "v2", "canary")
    assert canary_total is not None
    assert canary_total.histogram.max is not None
    assert 0 < canary_total.histogram.max < 5_000  # milliseconds


async def test_async_handlers_and_an_explicit_version(client: Client) -> None:
    @client.handler(APP, user="x-user-id", function="worker", version="v1-build-7")
    async def worker(event: dict[str, Any], context: object) -> dict[str, Any]:
        if event["headers"]["x-what"] == "raise":
            raise RuntimeError("down")
        return {"statusCode": 500 if event["headers"]["x-what"] == "fail" else 204}

    user = user_in(client, Channel.CANARY)
    await worker(api_event(user, "ok"), None)
    await worker(api_event(user, "fail"), None)
    with pytest.raises(RuntimeError):
        await worker(api_event(user, "raise"), None)
    assert counts(client, "v1-build-7", "canary", "worker") == (3, 2, 3)


def test_a_batch_counts_each_record_and_its_declared_failures(client: Client) -> None:
    stable, canary = user_in(client, Channel.STABLE), user_in(client, Channel.CANARY)

    def sqs(*users: str) -> dict[str, Any]:
        return {
            "Records": [
                {
                    "messageId": f"m{i}",
                    "eventSource": "aws:sqs",
                    "body": "{}",
                    "messageAttributes": {"user-id": {"stringValue": u, "dataType": "String"}},
                }
                for i, u in enumerate(users)
            ]
        }

    @client.handler(APP, user="user-id", function="api")
    def consume(event: dict[str, Any], context: object) -> dict[str, Any]:
        failed = [
            {"itemIdentifier": r.record["messageId"]}
            for r in record_decisions()
            if r.decision.channel is Channel.CANARY
        ]
        if len(failed) > 1:
            raise RuntimeError("the whole batch fails")
        return {"batchItemFailures": failed}

    consume(sqs(stable, canary, stable), None)
    assert counts(client, "v1", "stable") == (2, 0, 0)  # no latency per record in a batch
    assert counts(client, "v2", "canary") == (1, 1, 0)
    with pytest.raises(RuntimeError):
        consume(sqs(canary, canary, stable), None)
    assert counts(client, "v1", "stable") == (3, 1, 0)
    assert counts(client, "v2", "canary") == (3, 3, 0)


def test_nothing_is_counted_without_a_function_or_a_version(client: Client) -> None:
    @client.handler(APP, user="x-user-id")
    def anonymous(event: dict[str, Any], context: object) -> str:
        return "ok"

    @client.handler(APP, user="x-user-id", function="unknown-fn")
    def unrouted(event: dict[str, Any], context: object) -> str:
        return "ok"

    anonymous(api_event("alice", "ok"), None)
    unrouted(api_event("alice", "ok"), None)  # the decision names no version of it
    assert client.recorder is not None
    assert client.recorder.totals() == []


def test_record_never_raises_and_metrics_can_be_off(client: Client) -> None:
    client.record(APP, "api", "v1", "stable", 12.0)
    client.record(APP, "Bad Name", "v1", "stable", 12.0)  # logged, not raised
    client.record(APP, "api", "v1", "beta", 12.0)
    assert counts(client, "v1", "stable") == (1, 0, 1)
    mock = MockPlane(make_snapshot(1))
    with Client(
        "http://plane", "sdk-key", apps=[APP], stream=False, http=mock.http(), metrics=False
    ) as off:
        assert off.recorder is None
        assert off.flusher is None
        off.record(APP, "api", "v1", "stable", 12.0)


def test_invocations_reach_the_control_plane(sqlite_url: str) -> None:
    with serving(sqlite_url) as plane:
        plane.seed()
        plane.start_release()  # api v1 -> v2 at 30%
        with Client(
            plane.url, plane.sdk_key(), apps=[APP], signing_keys=KEYRING, flush_interval=3600
        ) as client:

            @client.handler(APP, user="x-user-id", function="api")
            def api(event: dict[str, Any], context: object) -> dict[str, Any]:
                return {"statusCode": 200 if event["headers"]["x-what"] == "ok" else 500}

            stable, canary = user_in(client, Channel.STABLE), user_in(client, Channel.CANARY)
            for _ in range(4):
                api(api_event(stable, "ok"), None)
            api(api_event(canary, "ok"), None)
            api(api_event(canary, "fail"), None)
            assert client.flusher is not None
            assert client.flusher.flush()
            assert client.flusher.stats.sent == 2
            stored_stable = plane.service.metrics.metrics_for(APP, "api", "v1", "stable", since=0)
            stored_canary = plane.service.metrics.metrics_for(APP, "api", "v2", "canary", since=0)
            assert (stored_stable.requests, stored_stable.errors) == (4, 0)
            assert (stored_canary.requests, stored_canary.errors) == (2, 1)
            assert client.recorder is not None
            total = client.recorder.total(APP, "api", "v2", "canary")
            assert total is not None
            assert stored_canary.to_dict() == total.to_dict()
