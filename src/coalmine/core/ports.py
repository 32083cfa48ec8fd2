"""The Protocols the outer layers implement, and the values that cross them.

One small Protocol per plug-in point (STYLE.md): the core names what it needs,
``coalmine.integrations`` supplies the implementations (each with an
in-memory twin), and a contract test suite runs against every one of them.

The event ``Stream`` a function publishes to and consumes from (and the
``Record`` it delivers); the controller's ports: ``HookRunner`` (lifecycle
hooks), ``AlarmSource`` (an outside signal the analysis evaluates),
``MetricsProvider`` (per-version metrics over a window), ``Leadership`` (who
drives the rollouts) and ``ReleaseStore`` (the releases the loop drives).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from coalmine.core.alarms import AlarmEvaluation
from coalmine.core.histogram import VersionMetrics
from coalmine.core.machine import Event, Hook, Transition
from coalmine.core.records import HookConfig, ReleaseRecord

__all__ = [
    "AlarmSource",
    "HookOutcome",
    "HookRunner",
    "Leadership",
    "MetricsProvider",
    "MetricsQuery",
    "Record",
    "ReleaseStore",
    "Stream",
    "Transitioned",
    "require_bytes",
]


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


# -- the controller's ports ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HookOutcome:
    """Whether a hook passed, and a sentence a person can read saying why."""

    passed: bool
    detail: str


class HookRunner(Protocol):
    """Runs one hook of one release; never raises for a failing hook, returns a failed outcome."""

    def run(self, release: ReleaseRecord, hook: Hook, spec: HookConfig) -> HookOutcome: ...


@runtime_checkable
class AlarmSource(Protocol):
    """An outside signal the analysis evaluates every interval."""

    @property
    def name(self) -> str: ...

    def evaluate(self, *, at: float | None = None) -> AlarmEvaluation:
        """The state now, or at Unix time ``at`` (to learn whether it fired before a release)."""
        ...


MetricsQuery = tuple[str, str, str]
"""(function, version, channel) of one app: one series of per-version metrics"""


class MetricsProvider(Protocol):
    """Per-version metrics over a time window: what the judge compares."""

    def metrics_for(
        self,
        app: str,
        function: str,
        version: str,
        channel: str,
        *,
        since: float,
        until: float | None = None,
    ) -> VersionMetrics:
        """The merged windows of one version in one channel whose start is in [since, until)."""
        ...

    def metrics_for_many(
        self,
        app: str,
        queries: Sequence[MetricsQuery],
        *,
        since: float,
        until: float | None = None,
    ) -> list[VersionMetrics]:
        """`metrics_for` of each query, in order, read together (one round trip)."""
        ...


class Leadership(Protocol):
    """Who may drive the rollouts. Implementations are thread-safe."""

    def try_acquire(self) -> bool:
        """Take the lead if it is free, without blocking; True while this process holds it.

        Called again and again by the loop: each call also checks the lead is
        still held (e.g. the lock's connection is alive).
        """
        ...

    @property
    def held(self) -> bool: ...

    def release(self) -> None:
        """Give the lead up (idempotent)."""
        ...


@dataclass(frozen=True, slots=True)
class Transitioned:
    """A release after a transition, and the transition (what to do next)."""

    release: ReleaseRecord
    transition: Transition


class ReleaseStore(Protocol):
    """The releases the controller drives: due timers, and one transition at a time.

    `advance` stores a transition and its audit event atomically, or raises
    `coalmine.core.errors.Conflict` when another writer changed the release
    first (optimistic concurrency): two controllers never both make a step.
    """

    def due(self, now: float) -> list[str]:
        """Ids of the releases whose timer has come, oldest first."""
        ...

    def next_due_at(self) -> float | None:
        """The earliest timer of any release (None: none is set)."""
        ...

    def advance(
        self, release_id: str, event: Event, actor: str = "controller"
    ) -> Transitioned | None:
        """Feed the state machine a tick or a hook result; None when nothing changed."""
        ...
