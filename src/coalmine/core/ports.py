"""The Protocols the outer layers implement, and the values that cross them.

One small Protocol per plug-in point (STYLE.md): the core names what it needs,
``coalmine.integrations`` supplies the implementations (each with an
in-memory twin), and a contract test suite runs against every one of them.

Streams: the event ``Stream`` a function publishes to and consumes from, and
the ``Record`` it delivers.

Routing (the section after the streams): the `Router` that decides for a
user or a record, and the `HandlerClient` the SDK's handler decorator runs
with (a router that also signs and counts); the `SnapshotSource` a gateway
reads its routing from (`ManagedSource`: one with a lifecycle).

Function targets (the section after routing): the `FunctionTarget` a gateway calls a
version through (one implementation per kind of target: a local handler, an
HTTP URL), the `Call` it is given, the ASGI ``Send`` it answers through, and
`CallFailed`, how it says that it could not answer.

Invoking a Lambda version: the `LambdaInvoker` the SDK's batch router
forwards a channel's records through, and the `LambdaInvocation` it answers.
Listing them: `LambdaVersions`, a function's `PublishedVersion`s, which the
control plane registers as versions (``versions: published``).

The controller's (the last section): `HookRunner` (lifecycle hooks),
`AlarmSource` (an outside signal the analysis evaluates), `MetricsProvider`
(per-version metrics over a window), `Leadership` (who drives the rollouts)
and `ReleaseStore` (the releases the loop drives).

Keeping a Lambda alias true (the last section): `LambdaAliases`, reading and
moving one alias of a Lambda function.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

from coalmine.core.alarms import AlarmEvaluation
from coalmine.core.alias import AliasRouting
from coalmine.core.histogram import VersionMetrics
from coalmine.core.machine import Event, Hook, Transition
from coalmine.core.model import Channel, Decision
from coalmine.core.records import HookConfig, ReleaseRecord
from coalmine.core.snapshot import RoutingSnapshot

__all__ = [
    "AlarmSource",
    "Call",
    "CallFailed",
    "FunctionTarget",
    "HandlerClient",
    "HookOutcome",
    "HookRunner",
    "LambdaAliases",
    "LambdaInvocation",
    "LambdaInvoker",
    "LambdaVersions",
    "Leadership",
    "ManagedSource",
    "Message",
    "MetricsProvider",
    "MetricsQuery",
    "PublishedVersion",
    "RawHeaders",
    "Receive",
    "Record",
    "ReleaseStore",
    "Router",
    "Send",
    "SnapshotClient",
    "SnapshotSource",
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


# -- routing: what decides for a user, where a gateway's snapshots come from ------


@runtime_checkable
class Router(Protocol):
    """Decides which versions a user (or a record) runs.

    `coalmine.sdk.Client` is one, following the control plane;
    `coalmine.sdk.StaticRouter` is the in-memory one, over a given
    `RoutingState`. A router that also has ``encode(decision)`` signs the
    context that the handler's own publishes carry; one with a ``keyring``
    attribute lets `coalmine.sdk.dispatch` verify contexts itself.
    """

    def decide(self, app: str, user_key: str | None, context: str | None = None) -> Decision:
        """The decision for ``user_key``, honouring the signed ``context`` (a token). Never raises."""
        ...


class HandlerClient(Router, Protocol):
    """What the handler decorator (`coalmine.sdk.handler`) runs with: a `Router` that
    also signs the context it propagates and counts the calls it sees.

    `coalmine.sdk.Client` is one. Typed by this Protocol, the decorator does
    not import the client (which offers it as ``client.handler``).
    """

    @property
    def recorder(self) -> object | None:
        """What counts the calls; None when metrics are off (then `record` is not called)."""
        ...

    def encode(self, decision: Decision) -> str | None:
        """The signed context of ``decision`` to propagate, or None. Never raises."""
        ...

    def record(
        self,
        app: str,
        function: str,
        version: str,
        channel: Channel | str,
        duration_ms: float | None,
        *,
        error: bool = False,
    ) -> None:
        """Count one call of ``version`` of ``function`` in ``channel``. Never raises."""
        ...


class SnapshotClient(HandlerClient, Protocol):
    """A `HandlerClient` that also gives the app's routing snapshot: where each version
    runs (`RoutingSnapshot.target_of`), which the SDK's batch router forwards by.

    `coalmine.sdk.Client` is one.
    """

    def snapshot(self, app: str) -> RoutingSnapshot | None:
        """The latest snapshot of ``app`` (None before the first). Never waits."""
        ...


@runtime_checkable
class SnapshotSource(Protocol):
    """The latest routing snapshot of an app, or None when there is none yet.

    A gateway reads it once per request: ``snapshot`` must not wait for the
    network. `coalmine.gateway.StaticSource` holds fixed snapshots (the
    in-memory one); `coalmine.gateway.SyncSource` follows the control plane.
    """

    def snapshot(self, app: str) -> RoutingSnapshot | None: ...


@runtime_checkable
class ManagedSource(Protocol):
    """A source with a lifecycle, started and closed by the gateway's lifespan."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


# -- function targets: what a gateway calls a version through ---------------------

Message = MutableMapping[str, Any]
"""An ASGI message: ``http.request``, ``http.response.start``, ``http.response.body``, ..."""
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
RawHeaders = list[tuple[bytes, bytes]]
"""Header names (lowercase) and values as bytes, in order, as ASGI carries them."""


class CallFailed(Exception):
    """Calling the version's target failed before a response was started.

    The gateway answers ``status`` with a JSON body, `body`.
    """

    request_id: str | None = None
    """the id the target gave the call (a Lambda event's ``requestId``), when it got one"""

    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, **self.extra}


@dataclass(slots=True)
class Call:
    """One request for a function's version, as the gateway hands it to the version's target.

    Read-only by convention, not frozen: a frozen dataclass sets each field
    through ``object.__setattr__``, which costs several times as much, and the
    gateway makes one per request.
    """

    target: str
    """the version's target reference: a URL, ``pkg.mod:handler``, a Lambda ARN"""
    function: str
    version: str
    decision: Decision
    """the decision the version was chosen by (a local handler runs inside it)"""
    method: str
    path: str
    """the request's full (decoded) path, e.g. ``/place-order/items/1``"""
    raw_rest: bytes
    """the still-encoded path after ``/{function}``: ``b""`` or starting with ``/``"""
    query: bytes
    headers: RawHeaders
    """the headers to send downstream (already rewritten by the gateway)"""
    receive: Receive
    """the request body, as ASGI ``http.request`` messages"""
    has_body: bool
    token: str | None = None
    """the signed routing context of ``decision`` (also in the ``baggage`` of ``headers``)"""
    source_ip: str = ""
    """the client's address, as the gateway saw it"""
    response_headers: Sequence[tuple[bytes, bytes]] = ()
    """headers the gateway adds to the answer (``x-coalmine-*``, a cookie): the
    target appends them to the headers of its ``http.response.start``"""


@runtime_checkable
class FunctionTarget(Protocol):
    """Where a gateway's call of a version goes: one implementation per kind of target.

    `invoke` answers through the ASGI ``send`` it is given: one
    ``http.response.start`` (with ``call.response_headers`` appended), then
    ``http.response.body`` messages, the last without ``more_body``. A target
    that streams (HTTP) sends as the answer comes; one that gets a whole
    payload back (a local handler, a Lambda) sends it in one body message.
    It returns the status to count the call by (the one it answered, or 502
    when an answer was cut short, 499 when the client went away). When it
    cannot answer at all it raises `CallFailed` before sending anything, and
    the gateway answers that status.

    `coalmine.gateway.HttpTarget` calls URLs, `coalmine.gateway.LocalTarget`
    runs local handlers, and `coalmine.gateway.MockTarget` (the in-memory
    one) answers with a function of the call.
    """

    async def start(self) -> None:
        """Get ready to be called (in the running event loop); idempotent."""
        ...

    async def invoke(self, call: Call, send: Send) -> int:
        """Call ``call.target`` with ``call``; send its answer; return the status to count."""
        ...

    async def close(self) -> None:
        """Release what the target holds (connections, threads)."""
        ...


# -- invoking a Lambda version -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LambdaInvocation:
    """What a synchronous (RequestResponse) Lambda Invoke answered."""

    payload: bytes
    """the function's result (JSON), or its error document when ``function_error`` is set"""
    function_error: str | None = None
    """``X-Amz-Function-Error`` (``Unhandled``, ``Handled``): the function failed"""
    status: int = 200


@runtime_checkable
class LambdaInvoker(Protocol):
    """Invokes one version of a Lambda function and waits for its answer.

    ``function`` is a name or an unqualified ARN, ``qualifier`` a version
    number or an alias. It raises when the call itself fails (throttled,
    timed out, unreachable); a function that ran and failed comes back with
    ``function_error`` set. `coalmine.sdk.batch_router.Boto3Invoker` is the
    boto3 one; tests pass a function of the payload.
    """

    def invoke(self, function: str, qualifier: str, payload: bytes) -> LambdaInvocation: ...


class PublishedVersion(NamedTuple):
    """One published version of a Lambda function."""

    version: str
    """the number Lambda gave it: ``"1"``, ``"2"``, ..."""
    arn: str
    """its qualified ARN, ``arn:aws:lambda:REGION:ACCOUNT:function:NAME:VERSION``"""


@runtime_checkable
class LambdaVersions(Protocol):
    """The published versions of a Lambda function, as the control plane registers them.

    `coalmine.integrations.lambda_versions.Boto3LambdaVersions` asks AWS
    (ListVersionsByFunction); `coalmine.controller.memory.MemoryLambdaVersions`
    is the in-memory one.
    """

    def published(self, function: str) -> list[PublishedVersion]:
        """Every published version of ``function`` (a name or an unqualified ARN), oldest
        first, without ``$LATEST``; an empty list when none was published.

        Raises `coalmine.core.errors.InvalidInput` when there is no such function
        (or the reference is not valid), `coalmine.core.errors.UpstreamFailed` when
        AWS cannot be asked; either message carries AWS's own words.
        """
        ...


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


# -- keeping a Lambda alias true -------------------------------------------------------


@runtime_checkable
class LambdaAliases(Protocol):
    """Reads and moves one alias of a Lambda function (GetAlias, UpdateAlias).

    ``function`` is an unqualified ARN or a bare name (region and account from
    the AWS configuration). Both methods raise
    `coalmine.core.alias.AliasCallFailed`, with what AWS said, when the call
    fails (no retries: the caller retries). `update` sets the alias's
    ``FunctionVersion`` and replaces its additional version weights with
    ``routing.weights`` (none: the alias sends everything to ``version``).
    `coalmine.integrations.lambda_alias.Boto3LambdaAliases` is the boto3 one;
    `coalmine.controller.memory.MemoryLambdaAliases` the in-memory twin.
    """

    def get(self, function: str, alias: str) -> AliasRouting: ...

    def update(self, function: str, alias: str, routing: AliasRouting) -> AliasRouting:
        """Move the alias; what it routes as afterwards."""
        ...
