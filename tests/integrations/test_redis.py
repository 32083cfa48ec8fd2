"""RedisStream beyond the contract: the entry layout, and a crashed consumer's records."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from coalmine._extras import MissingExtraError
from coalmine.integrations import RedisStream
from coalmine.sdk.publish import publish
from tests.services import need


@pytest.fixture
def stream() -> Iterator[RedisStream]:
    need("redis")
    s = RedisStream(ack_wait=0.5)
    yield s
    s.close()


@pytest.fixture
def topic(stream: RedisStream) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    yield name
    stream.delete_topic(name)


def test_an_entry_holds_data_key_and_h_fields(stream: RedisStream, topic: str) -> None:
    import redis

    publish(stream, topic, {"order_id": "o-1"}, key="alice", token="tok.en")
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        ((_id, fields),) = client.xrange(topic)
    finally:
        client.close()
    assert fields == {
        b"data": b'{"order_id":"o-1"}',
        b"key": b"alice",
        b"h:content-type": b"application/json",
        b"h:coalmine-user": b"alice",
        b"h:baggage": b"coalmine=tok.en",
    }


def test_a_crashed_consumers_records_are_claimed_by_another(
    stream: RedisStream, topic: str
) -> None:
    for i in range(3):
        stream.publish(topic, str(i).encode())
    lost = stream.consume(topic, "g", "crashed", max_records=10, timeout=0.5)
    assert len(lost) == 3  # read, never acked
    assert stream.consume(topic, "g", "survivor", max_records=10, timeout=0.1) == []
    time.sleep(0.6)
    claimed = stream.consume(topic, "g", "survivor", max_records=10, timeout=0.1)
    assert [r.data for r in claimed] == [b"0", b"1", b"2"]
    stream.ack(topic, "g", claimed)


def test_a_missing_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(MissingExtraError, match=r"coalmine\[redis\]"):
        RedisStream()


def test_a_stream_deleted_elsewhere_is_recreated_with_its_group(
    stream: RedisStream, topic: str
) -> None:
    stream.publish(topic, b"before")
    assert len(stream.consume(topic, "g", "c", max_records=10, timeout=0.1)) == 1
    other = RedisStream()
    other.delete_topic(topic)
    other.close()
    stream.publish(topic, b"after")
    got = stream.consume(topic, "g", "c", max_records=10, timeout=0.1)
    assert [r.data for r in got] == [b"after"]
