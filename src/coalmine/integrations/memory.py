"""`MemoryStream`: the embedded, in-process event stream (the default, and the test double).

It behaves as the brokers do, so code and tests written against it hold on
NATS, Redis and Kinesis: records are spread over partitions by a hash of
their key (order holds within a partition), each consumer group has its own
offsets, the consumers of a group share its records, and a record consumed
but not acked within ``ack_wait`` seconds is delivered again.
``supports_headers=False`` makes it header-less, like Kinesis, so the
envelope path runs offline too.
"""

from __future__ import annotations

import itertools
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from coalmine.core.errors import InvalidInput
from coalmine.core.ports import Record, require_bytes
from coalmine.integrations._checks import (
    check_ack_wait,
    check_max_records,
    check_topic,
    refuse_headers,
)

__all__ = ["DEFAULT_ACK_WAIT", "InFlight", "MemoryStream", "partition_of"]

DEFAULT_ACK_WAIT = 30.0
"""seconds a consumed record may stay unacked before it is delivered again"""

Clock = Callable[[], float]


def partition_of(key: str, partitions: int) -> int:
    """The partition of ``key``: CRC-32 of its UTF-8 bytes, stable across processes."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % partitions


class InFlight:
    """Records delivered to a group and not acked yet, in first-delivery order.

    A record is known by its partition and sequence (sequence numbers need
    not be unique across partitions).

    `expired` hands back (and re-arms) those whose ack deadline has passed,
    for redelivery. Shared by the in-process implementations.
    """

    def __init__(self, ack_wait: float, clock: Clock) -> None:
        check_ack_wait(ack_wait)
        self.ack_wait = ack_wait
        self._clock = clock
        self._records: dict[tuple[str, str], tuple[Record, float]] = {}

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Record]:
        return (record for record, _ in self._records.values())

    def deliver(self, record: Record) -> None:
        self._records[record.partition, record.sequence] = (record, self._clock() + self.ack_wait)

    def expired(self, limit: int) -> list[Record]:
        now = self._clock()
        out = [r for r, deadline in self._records.values() if deadline <= now][:limit]
        for record in out:
            self._records[record.partition, record.sequence] = (record, now + self.ack_wait)
        return out

    def ack(self, record: Record) -> bool:
        return self._records.pop((record.partition, record.sequence), None) is not None


@dataclass
class _Group:
    cursors: list[int]
    inflight: InFlight
    turn: int = 0


@dataclass
class _Topic:
    partitions: list[list[Record]]
    groups: dict[str, _Group] = field(default_factory=dict)


class MemoryStream:
    """An in-process `coalmine.core.ports.Stream`; thread-safe.

    ``partitions`` is how many ordered partitions a topic has; a record with a
    key goes to ``partition_of(key)``, one without to the next partition in
    turn. Sequences are decimal strings, increasing within a topic.
    """

    def __init__(
        self,
        *,
        partitions: int = 4,
        ack_wait: float = DEFAULT_ACK_WAIT,
        supports_headers: bool = True,
        clock: Clock = time.monotonic,
    ) -> None:
        if partitions < 1:
            raise InvalidInput("a topic needs at least one partition")
        check_ack_wait(ack_wait)
        self.partitions = partitions
        self.ack_wait = ack_wait
        self.supports_headers = supports_headers
        self._clock = clock
        self._topics: dict[str, _Topic] = {}
        self._sequence = itertools.count(1)
        self._spread = itertools.count()
        self._changed = threading.Condition(threading.Lock())

    def _topic(self, topic: str) -> _Topic:
        got = self._topics.get(topic)
        if got is None:
            check_topic(topic)
            got = self._topics[topic] = _Topic([[] for _ in range(self.partitions)])
        return got

    def publish(
        self,
        topic: str,
        data: bytes,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        require_bytes(data)
        if not self.supports_headers:
            refuse_headers(headers, "this stream has no record headers")
        with self._changed:
            t = self._topic(topic)
            if key is not None:
                p = partition_of(key, self.partitions)
            else:
                p = next(self._spread) % self.partitions
            sequence = str(next(self._sequence))
            carried = MappingProxyType(dict(headers or {})) if self.supports_headers else None
            t.partitions[p].append(Record(topic, str(p), sequence, bytes(data), carried, key))
            self._changed.notify_all()
        return sequence

    def consume(
        self, topic: str, group: str, consumer: str, *, max_records: int, timeout: float
    ) -> list[Record]:
        check_max_records(max_records)
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._changed:
            t = self._topic(topic)
            g = t.groups.get(group)
            if g is None:
                g = t.groups[group] = _Group(
                    [0] * self.partitions, InFlight(self.ack_wait, self._clock)
                )
            while True:
                out = self._take(t, g, max_records)
                remaining = deadline - time.monotonic()
                if out or remaining <= 0:
                    return out
                # a publish wakes the wait; an unacked record may fall due meanwhile
                self._changed.wait(min(remaining, 0.05) if len(g.inflight) else remaining)

    def _take(self, t: _Topic, g: _Group, limit: int) -> list[Record]:
        out = g.inflight.expired(limit)
        n = self.partitions
        first = g.turn
        g.turn = (g.turn + 1) % n
        for i in range(n):
            if len(out) >= limit:
                break
            p = (first + i) % n
            log, at = t.partitions[p], g.cursors[p]
            taken = log[at : at + limit - len(out)]
            g.cursors[p] = at + len(taken)
            for record in taken:
                g.inflight.deliver(record)
            out.extend(taken)
        return out

    def ack(self, topic: str, group: str, records: Sequence[Record]) -> None:
        with self._changed:
            t = self._topics.get(topic)
            g = t.groups.get(group) if t is not None else None
            if g is None:
                return
            for record in records:
                g.inflight.ack(record)
            self._changed.notify_all()

    # beyond the port -----------------------------------------------------------

    def pending(self, topic: str, group: str) -> int:
        """How many records ``group`` has consumed and not acked."""
        with self._changed:
            t = self._topics.get(topic)
            g = t.groups.get(group) if t is not None else None
            return len(g.inflight) if g is not None else 0

    def records(self, topic: str) -> list[Record]:
        """Every record of ``topic``, partition by partition (for tests and inspection)."""
        with self._changed:
            t = self._topics.get(topic)
            return [r for log in t.partitions for r in log] if t is not None else []

    def delete_topic(self, topic: str) -> None:
        with self._changed:
            self._topics.pop(topic, None)

    def close(self) -> None:
        """Nothing to release; here so every stream can be closed alike."""

    def __enter__(self) -> MemoryStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
