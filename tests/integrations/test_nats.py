"""NatsJetStream beyond the contract: plain NATS clients see what coalmine wrote."""

from __future__ import annotations

import asyncio
import sys
import uuid

import pytest

from coalmine._extras import MissingExtraError
from coalmine.integrations import NatsJetStream
from coalmine.integrations.nats import KEY_HEADER
from coalmine.sdk.publish import publish
from tests.services import need


@pytest.fixture
def stream() -> NatsJetStream:
    need("nats")
    s = NatsJetStream(storage="memory", prefix="cmtest")
    yield s  # type: ignore[misc]
    s.close()


def test_a_plain_nats_client_reads_the_context_from_the_headers(stream: NatsJetStream) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    publish(stream, topic, {"order_id": "o-1"}, key="alice", token="tok.en")

    async def read() -> tuple[bytes, dict[str, str]]:
        import nats

        nc = await nats.connect("nats://127.0.0.1:4222")
        try:
            js = nc.jetstream()
            msg = await js.get_msg(stream.stream_name(topic), 1)
            return msg.data, dict(msg.headers or {})
        finally:
            await nc.close()

    try:
        data, headers = asyncio.run(read())
    finally:
        stream.delete_topic(topic)
    assert data == b'{"order_id":"o-1"}'
    assert headers["baggage"] == "coalmine=tok.en"
    assert headers["coalmine-user"] == "alice"
    assert headers["content-type"] == "application/json"
    assert headers[KEY_HEADER] == "alice"
    assert stream.subject(topic) == f"cmtest.{topic}"


def test_names_nats_cannot_take_are_refused(stream: NatsJetStream) -> None:
    with pytest.raises(ValueError, match="invalid topic"):
        stream.publish("orders.placed", b"")
    with pytest.raises(ValueError, match="invalid group"):
        stream.consume("orders", "a group", "c", max_records=1, timeout=0.1)


def test_close_is_idempotent() -> None:
    need("nats")
    s = NatsJetStream()
    s.close()
    s.close()


def test_a_missing_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nats", None)
    with pytest.raises(MissingExtraError, match=r"coalmine\[nats\]"):
        NatsJetStream()
