"""The Protocols the outer layers implement, and the values that cross them.

One small Protocol per plug-in point (STYLE.md): the core names what it needs,
``coalmine.integrations`` supplies the implementations (each with an
in-memory twin), and a contract test suite runs against every one of them.

So far: the event ``Stream`` a function publishes to and consumes from, and
the ``Record`` it delivers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Record", "Stream", "require_bytes"]


@dataclass(frozen=True, slots=True)
class Record:
    """One record read from a stream.

    ``partition`` is where order holds (a Kinesis shard, a MemoryStream
    partition; ``"0"`` for NATS JetStream and Redis Streams, whose streams are
    one ordered log). ``sequence`` identifies the record within its stream (the
    ``itemIdentifier`` of a Lambda partial batch response). ``headers`` is None
    where the broker has none (Kinesis): the routing context then travels in an
    envelope inside ``data``. ``key`` is the partition key given at publish,
    usually the user key; None when none was given.
    """

    stream: str
    partition: str
    sequence: str
    data: bytes
    headers: Mapping[str, str] | None = None
    key: str | None = None


@runtime_checkable
class Stream(Protocol):
    """An event stream with consumer groups: publish, consume, ack.

    Synchronous on purpose: function handlers (Lambda-style) and the routing
    core are synchronous; an implementation over an async client (NATS) runs
    its own event loop thread. From async code call it through
    ``asyncio.to_thread``.

    Delivery is at least once: a record consumed but not acked within the
    implementation's ``ack_wait`` is delivered again, to any consumer of the
    group. Each group sees every record; the consumers of one group share
    them. Order holds within a partition, for the records one consumer reads.
    """

    supports_headers: bool
    """Whether records carry headers (else `publish` refuses them)."""

    def publish(
        self,
        topic: str,
        data: bytes,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Append one record to ``topic`` and return its sequence."""
        ...

    def consume(
        self, topic: str, group: str, consumer: str, *, max_records: int, timeout: float
    ) -> list[Record]:
        """Up to ``max_records`` records for ``consumer`` of ``group``.

        Waits up to ``timeout`` seconds for the first one; an empty list when
        none came.
        """
        ...

    def ack(self, topic: str, group: str, records: Sequence[Record]) -> None:
        """Mark ``records`` as processed by ``group``: they are not delivered to it again."""
        ...


def require_bytes(data: object) -> None:
    """What every `Stream.publish` checks first: record data is bytes (``TypeError`` if not)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"record data must be bytes, not {type(data).__name__}")
