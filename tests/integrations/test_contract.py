"""The stream contract: one suite, run against every implementation of `Stream`.

memory (with and without headers), NATS JetStream and Redis Streams (real
servers on 127.0.0.1) and Kinesis (moto) must all pass it unchanged.
"""

from __future__ import annotations

import time
from collections import defaultdict

import pytest

from coalmine.core.errors import InvalidInput
from coalmine.core.ports import Record, Stream
from tests.integrations.conftest import MakeStream

BINARY = bytes(range(256)) + b"\x00\xff not utf-8: \xc3\x28"


def drain(
    stream: Stream, topic: str, group: str, consumer: str = "c1", *, want: int
) -> list[Record]:
    """Consume (and ack) until ``want`` records came, or give up after a few seconds."""
    out: list[Record] = []
    deadline = time.monotonic() + 10
    while len(out) < want and time.monotonic() < deadline:
        got = stream.consume(topic, group, consumer, max_records=want - len(out), timeout=0.5)
        stream.ack(topic, group, got)
        out.extend(got)
    return out


def test_it_is_a_stream(make_stream: MakeStream) -> None:
    stream = make_stream()
    assert isinstance(stream, Stream)
    assert isinstance(stream.supports_headers, bool)


def test_bytes_headers_and_key_round_trip(make_stream: MakeStream, topic: str) -> None:
    stream = make_stream()
    headers = {"baggage": "coalmine=abc.def", "content-type": "application/octet-stream"}
    sent = stream.publish(
        topic, BINARY, key="user-1", headers=headers if stream.supports_headers else None
    )
    plain = stream.publish(topic, b"")
    got = drain(stream, topic, "g", want=2)
    by_seq = {(r.sequence, r.data): r for r in got}
    first = by_seq[sent, BINARY]
    assert (first.stream, first.key) == (topic, "user-1")
    assert isinstance(first.partition, str)
    second = by_seq[plain, b""]
    assert second.key is None
    if stream.supports_headers:
        assert dict(first.headers or {}) == headers
        assert dict(second.headers or {}) == {}
    else:
        assert first.headers is None
        assert second.headers is None


def test_a_stream_without_headers_refuses_them(make_stream: MakeStream, topic: str) -> None:
    stream = make_stream()
    if stream.supports_headers:
        pytest.skip("this stream has headers")
    with pytest.raises(ValueError, match=r"no .*headers"):
        stream.publish(topic, b"x", headers={"baggage": "coalmine=t"})
    with pytest.raises(
        InvalidInput,
        match=r"headers: wrap the context in the envelope \(coalmine.sdk.publish does\)$",
    ):
        stream.publish(topic, b"x", headers={"baggage": "coalmine=t"})


def test_data_must_be_bytes(make_stream: MakeStream, topic: str) -> None:
    with pytest.raises(TypeError, match="bytes"):
        make_stream().publish(topic, "text")  # type: ignore[arg-type]


def test_order_holds_within_a_partition(make_stream: MakeStream, topic: str) -> None:
    stream = make_stream()
    keys = ["alice", "bob", "carol", "dave"]
    sent: dict[str, list[bytes]] = defaultdict(list)
    for i in range(12):
        for key in keys:
            data = f"{key}-{i}".encode()
            stream.publish(topic, data, key=key)
            sent[key].append(data)
    got = drain(stream, topic, "g", want=48)
    assert len(got) == 48
    seen: dict[str, list[bytes]] = defaultdict(list)
    partitions: dict[str, set[str]] = defaultdict(set)
    for r in got:
        assert r.key is not None
        seen[r.key].append(r.data)
        partitions[r.key].add(r.partition)
    assert seen == sent
    assert all(len(p) == 1 for p in partitions.values()), partitions


def test_consume_waits_up_to_the_timeout_then_returns_nothing(
    make_stream: MakeStream, topic: str
) -> None:
    stream = make_stream()
    start = time.monotonic()
    assert stream.consume(topic, "g", "c1", max_records=10, timeout=0.3) == []
    assert 0.2 <= time.monotonic() - start < 5


def test_max_records_is_respected(make_stream: MakeStream, topic: str) -> None:
    stream = make_stream()
    for i in range(10):
        stream.publish(topic, str(i).encode(), key="k")
    first = stream.consume(topic, "g", "c1", max_records=3, timeout=2)
    assert 1 <= len(first) <= 3
    stream.ack(topic, "g", first)
    rest = drain(stream, topic, "g", want=10 - len(first))
    assert sorted(r.data for r in first + rest) == sorted(str(i).encode() for i in range(10))


def test_each_group_sees_every_record(make_stream: MakeStream, topic: str) -> None:
    stream = make_stream()
    for i in range(6):
        stream.publish(topic, str(i).encode(), key=f"u{i}")
    a = drain(stream, topic, "billing", want=6)
    b = drain(stream, topic, "notify", want=6)
    assert (
        sorted(r.data for r in a)
        == sorted(r.data for r in b)
        == [str(i).encode() for i in range(6)]
    )


def test_consumers_of_a_group_share_the_records_without_duplicates(
    kind: str, make_stream: MakeStream, topic: str
) -> None:
    stream = make_stream()
    # a second connection to the broker, as a second process would have; the
    # in-process streams (memory; Kinesis, whose groups live in memory) share one object
    other = make_stream() if kind in ("nats", "redis") else stream
    n = 40
    for i in range(n):
        stream.publish(topic, str(i).encode(), key=f"u{i % 7}")
    taken: dict[str, list[bytes]] = {"c1": [], "c2": []}
    deadline = time.monotonic() + 15
    while sum(map(len, taken.values())) < n and time.monotonic() < deadline:
        for name, s in (("c1", stream), ("c2", other)):
            got = s.consume(topic, "g", name, max_records=6, timeout=0.3)
            s.ack(topic, "g", got)
            taken[name].extend(r.data for r in got)
    everything = taken["c1"] + taken["c2"]
    assert sorted(everything) == sorted(str(i).encode() for i in range(n))  # no duplicates
    assert taken["c1"], "both consumers got a share"
    assert taken["c2"], "both consumers got a share"
    assert stream.consume(topic, "g", "c1", max_records=10, timeout=0.2) == []
    assert other.consume(topic, "g", "c2", max_records=10, timeout=0.2) == []


def test_unacked_records_come_back_and_acked_ones_do_not(
    make_stream: MakeStream, topic: str
) -> None:
    stream = make_stream(ack_wait=0.6)
    for i in range(4):
        stream.publish(topic, str(i).encode(), key="same-user")
    got = drain_no_ack(stream, topic, want=4)
    assert [r.data for r in got] == [b"0", b"1", b"2", b"3"]
    stream.ack(topic, "g", got[:2])
    assert stream.consume(topic, "g", "c1", max_records=10, timeout=0.2) == []
    time.sleep(0.7)
    again: list[Record] = []
    deadline = time.monotonic() + 5
    while len(again) < 2 and time.monotonic() < deadline:
        again += stream.consume(topic, "g", "c2", max_records=10, timeout=0.5)
    assert [r.data for r in again] == [b"2", b"3"]
    assert [r.sequence for r in again] == [r.sequence for r in got[2:]]
    stream.ack(topic, "g", again)


def drain_no_ack(stream: Stream, topic: str, *, want: int) -> list[Record]:
    out: list[Record] = []
    deadline = time.monotonic() + 10
    while len(out) < want and time.monotonic() < deadline:
        out += stream.consume(topic, "g", "c1", max_records=want - len(out), timeout=0.5)
    return out


def test_max_records_must_be_positive(make_stream: MakeStream, topic: str) -> None:
    with pytest.raises(ValueError, match="max_records"):
        make_stream().consume(topic, "g", "c1", max_records=0, timeout=0)


# -- the argument checks: InvalidInput (a ValueError), one message for every stream ----------


def test_max_records_below_one_is_invalid_input(make_stream: MakeStream, topic: str) -> None:
    with pytest.raises(InvalidInput, match=r"^max_records must be at least 1$"):
        make_stream().consume(topic, "g", "c1", max_records=0, timeout=0)


def test_ack_wait_must_be_positive(make_stream: MakeStream) -> None:
    for ack_wait in (0, -1.5):
        with pytest.raises(InvalidInput, match=r"^ack_wait must be a positive number of seconds$"):
            make_stream(ack_wait=ack_wait)


def test_a_topic_is_a_non_empty_string(make_stream: MakeStream, kind: str) -> None:
    # NATS restricts topic names further (they become subjects and stream names)
    message = "invalid topic '' for NATS" if kind == "nats" else "^a topic is a non-empty string$"
    with pytest.raises(InvalidInput, match=message):
        make_stream().publish("", b"x")
