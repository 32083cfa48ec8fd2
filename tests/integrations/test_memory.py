"""MemoryStream beyond the contract: partitioning, redelivery by its clock, waking consumers."""

from __future__ import annotations

import threading
import time

import pytest

from coalmine.integrations import MemoryStream
from coalmine.integrations.memory import partition_of
from tests.helpers import FakeClock


def test_partition_of_is_crc32_and_stable_across_processes() -> None:
    # golden values: a change would move users' events between partitions
    keys = ("alice", "bob", "user-1", "ü")
    assert [partition_of(k, 4) for k in keys] == [3, 0, 0, 1]
    assert [partition_of(k, 16) for k in keys] == [7, 0, 4, 5]
    assert partition_of("alice", 1) == 0


def test_keyed_records_share_a_partition_and_unkeyed_ones_spread() -> None:
    s = MemoryStream(partitions=3)
    for _ in range(6):
        s.publish("t", b"k", key="alice")
        s.publish("t", b"n")
    records = s.records("t")
    assert {r.partition for r in records if r.key == "alice"} == {str(partition_of("alice", 3))}
    assert {r.partition for r in records if r.key is None} == {"0", "1", "2"}
    assert [int(r.sequence) for r in records if r.key == "alice"] == sorted(
        int(r.sequence) for r in records if r.key == "alice"
    )


def test_redelivery_follows_the_given_clock() -> None:
    clock = FakeClock(100.0)
    s = MemoryStream(ack_wait=5, clock=clock)
    s.publish("t", b"a")
    first = s.consume("t", "g", "c", max_records=10, timeout=0)
    assert [r.data for r in first] == [b"a"]
    assert s.pending("t", "g") == 1
    clock.advance(4.9)
    assert s.consume("t", "g", "c", max_records=10, timeout=0) == []
    clock.advance(0.2)
    assert s.consume("t", "g", "c2", max_records=10, timeout=0) == first
    s.ack("t", "g", first)
    clock.advance(60)
    assert s.consume("t", "g", "c", max_records=10, timeout=0) == []
    assert s.pending("t", "g") == 0


def test_a_waiting_consumer_wakes_when_a_record_is_published() -> None:
    s = MemoryStream()
    threading.Timer(0.1, lambda: s.publish("t", b"late")).start()
    start = time.monotonic()
    got = s.consume("t", "g", "c", max_records=1, timeout=5)
    assert [r.data for r in got] == [b"late"]
    assert time.monotonic() - start < 2


def test_headers_are_read_only_copies() -> None:
    s = MemoryStream()
    sent = {"baggage": "coalmine=x"}
    s.publish("t", b"", headers=sent)
    sent["baggage"] = "changed"
    (record,) = s.consume("t", "g", "c", max_records=1, timeout=0)
    assert record.headers == {"baggage": "coalmine=x"}
    with pytest.raises(TypeError):
        record.headers["x"] = "y"  # type: ignore[index]


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="partition"):
        MemoryStream(partitions=0)
    with pytest.raises(ValueError, match="ack_wait"):
        MemoryStream(ack_wait=0)
    with pytest.raises(ValueError, match="topic"):
        MemoryStream().publish("", b"")


def test_delete_topic_forgets_records_and_groups() -> None:
    with MemoryStream() as s:
        s.publish("t", b"x")
        s.delete_topic("t")
        assert s.records("t") == []
        assert s.consume("t", "g", "c", max_records=1, timeout=0) == []
