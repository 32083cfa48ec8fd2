"""Consume a batch of records, each with the version of its own chain.

A consumer function has several versions deployed side by side during a
release (say ``notify-user`` v1 and v2). `dispatch` takes a batch read from a
stream and, for every record,

1. reads the routing context it carries (the ``baggage`` header, or the
   Kinesis envelope) and its user key (the ``coalmine-user`` header, the
   envelope's ``user``, else the record's key);
2. asks the router for the decision: a valid context pins the record to the
   producer's channel (DESIGN rule 2), a record without one is decided by its
   user key, and one without either goes to stable;
3. runs the handler of the version that decision names for ``function``,
   inside ``use(decision, token)``, so whatever the handler publishes carries
   the same context.

The batch is split by channel; within a channel, records run in order, and
after a record fails the later records of its partition and channel are not
run (status ``skipped``): they stay unacked and come back, in order, with the
failed one, as Lambda does when a batch item fails. A record whose version has
no handler in this process fails (``no_handler``): it is never run on
another version. `DispatchResult.batch_item_failures` is the shape of a
Lambda partial batch response.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from coalmine.core.context import RoutingContext, decode_context
from coalmine.core.model import Channel, Decision, Reason
from coalmine.core.ports import Record, Router, Stream
from coalmine.core.signing import Keyring
from coalmine.sdk.records import RecordView, view
from coalmine.sdk.scope import use

__all__ = [
    "DispatchResult",
    "Handler",
    "RecordOutcome",
    "RecordStatus",
    "RouteReason",
    "consume_and_dispatch",
    "dispatch",
]

log = logging.getLogger("coalmine.sdk")

Handler = Callable[[Any], Any]
"""a version's handler: called with the record's payload"""


class RouteReason(StrEnum):
    """What routed a record."""

    CONTEXT = "context"
    """its routing context (the decision's own reason says how it was honoured)"""
    USER_KEY = "user_key"
    """no context: decided afresh by its user key"""
    NO_KEY = "no_key"
    """neither context nor user key: stable (user mode), a roll (request mode)"""
    DRAINING = "draining"
    """its chain's own version, although its release was settled (a drain option)"""


class RecordStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"
    """the handler raised"""
    NO_HANDLER = "no_handler"
    """the record's version has no handler in this process"""
    SKIPPED = "skipped"
    """not run: an earlier record of its partition and channel failed"""
    UNREADABLE = "unreadable"
    """the payload could not be decoded"""


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    """What happened to one record."""

    record: Record
    status: RecordStatus
    reason: RouteReason
    decision: Decision
    version: str | None
    """the version of the consuming function that ran (or should have run) it"""
    error: str | None = None
    result: Any = None
    """what the handler returned"""

    @property
    def ok(self) -> bool:
        return self.status is RecordStatus.OK

    @property
    def channel(self) -> Channel:
        return self.decision.channel


@dataclass(frozen=True, slots=True)
class DispatchResult:
    """The outcome of every record of a batch, in the batch's order."""

    outcomes: tuple[RecordOutcome, ...]

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    @property
    def failures(self) -> tuple[RecordOutcome, ...]:
        return tuple(o for o in self.outcomes if not o.ok)

    @property
    def succeeded(self) -> list[Record]:
        """The records to ack."""
        return [o.record for o in self.outcomes if o.ok]

    def batch_item_failures(self) -> dict[str, list[dict[str, str]]]:
        """A Lambda partial batch response: ``{"batchItemFailures": [{"itemIdentifier": seq}]}``."""
        return {"batchItemFailures": [{"itemIdentifier": o.record.sequence} for o in self.failures]}

    def count(self, status: RecordStatus | None = None, version: str | None = None) -> int:
        return sum(
            1
            for o in self.outcomes
            if (status is None or o.status is status) and (version is None or o.version == version)
        )


# routing ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Routed:
    record: Record
    read: RecordView | None
    reason: RouteReason
    decision: Decision
    version: str | None
    token: str | None
    error: str | None


class _Dispatcher:
    def __init__(
        self,
        app: str,
        function: str,
        router: Router,
        keyring: Keyring | None,
        drain_canary: bool,
        drain_stable: bool,
        user_key: Callable[[Record], str | None] | None,
    ) -> None:
        self.app = app
        self.function = function
        self.router = router
        self.keyring = keyring
        self.drain_canary = drain_canary
        self.drain_stable = drain_stable
        self.user_key = user_key
        encode = getattr(router, "encode", None)
        self.encode: Callable[[Decision], str | None] | None = encode if callable(encode) else None
        self._tokens: dict[tuple[object, ...], str | None] = {}

    def route(self, record: Record) -> _Routed:
        try:
            read = view(record)
            user = self.user_key(record) if self.user_key is not None else read.user
        except Exception as exc:
            decision = self._decide(None, None)
            return _Routed(
                record,
                None,
                RouteReason.NO_KEY,
                decision,
                decision.version_of(self.function),
                None,
                f"cannot read the record: {type(exc).__name__}: {exc}",
            )
        token = read.token
        if token is not None:
            reason = RouteReason.CONTEXT
        elif user:
            reason = RouteReason.USER_KEY
        else:
            reason = RouteReason.NO_KEY
        decision = self._decide(user or None, token)
        if token is not None and (self.drain_canary or self.drain_stable):
            drained = self._drained(decision, token)
            if drained is not None:
                decision, reason = drained, RouteReason.DRAINING
        return _Routed(
            record,
            read,
            reason,
            decision,
            decision.version_of(self.function),
            self._token(decision, token),
            None,
        )

    def _decide(self, user: str | None, token: str | None) -> Decision:
        try:
            return self.router.decide(self.app, user, token)
        except Exception as exc:  # a router should not raise; the batch must go on
            log.exception("coalmine: the router failed to decide for app %r", self.app)
            return Decision(
                self.app, None, Channel.STABLE, {}, Reason.ERROR, f"router failed: {exc}"
            )

    def _drained(self, decision: Decision, token: str) -> Decision | None:
        if decision.reason is Reason.ROLLED_BACK:
            wanted, settled = Channel.CANARY, "rolled back"
            if not self.drain_canary:
                return None
        elif decision.reason is Reason.PROMOTED:
            wanted, settled = Channel.STABLE, "promoted"
            if not self.drain_stable:
                return None
        else:
            return None
        assert self.keyring is not None  # checked by dispatch
        ctx = decode_context(token, self.keyring, now=time.time())
        if (
            not isinstance(ctx, RoutingContext)
            or ctx.app != self.app
            or ctx.release_id != decision.release_id
            or ctx.channel is not wanted
            or self.function not in ctx.versions
        ):
            return None
        return Decision(
            self.app,
            ctx.release_id,
            ctx.channel,
            ctx.versions,
            Reason.PINNED,
            f"draining: release {ctx.release_id} was {settled}; the record keeps"
            f" its chain's {ctx.channel} version",
        )

    def _token(self, decision: Decision, incoming: str | None) -> str | None:
        if self.encode is None:
            return incoming if decision.reason is Reason.PINNED else None
        key = (
            decision.app,
            decision.release_id,
            decision.channel,
            decision.reason,
            id(decision.versions),
            decision.binding,  # a context is bound to its user
            decision.expires_at,  # and keeps the expiry of the context it was pinned by
        )
        if key not in self._tokens:
            try:
                self._tokens[key] = self.encode(decision)
            except Exception as exc:
                log.warning("coalmine: cannot encode the routing context: %s", exc)
                self._tokens[key] = None
        return self._tokens[key]


def _run(
    r: _Routed, handlers: Mapping[str, Handler], function: str
) -> tuple[RecordStatus, str | None, Any]:
    if r.error is not None or r.read is None:
        return RecordStatus.UNREADABLE, r.error, None
    if r.version is None:
        d = r.decision
        why = f"{d.reason}: {d.detail}" if d.detail else str(d.reason)
        return RecordStatus.NO_HANDLER, f"the decision names no version of {function} ({why})", None
    handler = handlers.get(r.version)
    if handler is None:
        known = ", ".join(sorted(handlers)) or "none"
        return (
            RecordStatus.NO_HANDLER,
            f"{function} {r.version} has no handler in this process (handlers: {known});"
            f" the record is not run on another version",
            None,
        )
    try:
        payload = r.read.payload()
    except Exception as exc:
        return RecordStatus.UNREADABLE, f"cannot decode the payload: {exc}", None
    try:
        with use(r.decision, r.token):
            result = handler(payload)
            if inspect.isawaitable(result):
                close = getattr(result, "close", None)
                if callable(close):
                    close()
                raise TypeError("the handler is async: dispatch calls synchronous handlers")
    except Exception as exc:
        return RecordStatus.FAILED, f"{type(exc).__name__}: {exc}", None
    return RecordStatus.OK, None, result


def dispatch(
    records: Iterable[Record],
    handlers_by_version: Mapping[str, Handler],
    *,
    app: str,
    function: str,
    router: Router,
    drain_canary_after_rollback: bool = False,
    drain_stable_after_promotion: bool = False,
    keyring: Keyring | None = None,
    user_key: Callable[[Record], str | None] | None = None,
) -> DispatchResult:
    """Run each record with the version of ``function`` its own chain runs; see the module.

    ``handlers_by_version`` maps the version names of ``function`` deployed in
    this process to ``handler(payload)``. ``router`` decides (a `Client`, a
    `StaticRouter`, anything with ``decide(app, user_key, context)``).

    A record pinned to the canary of a release that was since rolled back runs
    the baseline version (DESIGN rule 2). With ``drain_canary_after_rollback``
    it runs the candidate version named in its own context instead (for events
    the baseline cannot read); ``drain_stable_after_promotion`` is the mirror
    image, for records pinned to stable of a release since promoted. Draining
    verifies the context with ``keyring`` (by default the router's
    ``keyring``). ``user_key(record)`` overrides where the user key is read.

    Never raises for a record: every failure is in its `RecordOutcome`.
    """
    if drain_canary_after_rollback or drain_stable_after_promotion:
        keyring = keyring if keyring is not None else getattr(router, "keyring", None)
        if not isinstance(keyring, Keyring):
            raise ValueError(
                "draining verifies each record's context: give keyring=, or a router with"
                " a keyring (a Client with signing keys, a StaticRouter)"
            )
    d = _Dispatcher(
        app,
        function,
        router,
        keyring,
        drain_canary_after_rollback,
        drain_stable_after_promotion,
        user_key,
    )
    routed = [d.route(record) for record in records]
    by_channel: dict[Channel, list[int]] = {}
    for i, r in enumerate(routed):
        by_channel.setdefault(r.decision.channel, []).append(i)
    outcomes: list[RecordOutcome | None] = [None] * len(routed)
    for channel, indices in by_channel.items():
        failed_at: dict[tuple[str, str], str] = {}
        for i in indices:
            r = routed[i]
            at = (r.record.stream, r.record.partition)
            first = failed_at.get(at)
            error: str | None
            if first is not None:
                status, result = RecordStatus.SKIPPED, None
                error = (
                    f"not run: record {first} of partition {r.record.partition} ({channel})"
                    " failed before it; it comes back in order with that record"
                )
            else:
                status, error, result = _run(r, handlers_by_version, function)
                if status is not RecordStatus.OK:
                    failed_at[at] = r.record.sequence
                    log.debug("coalmine: record %s %s: %s", r.record.sequence, status, error)
            outcomes[i] = RecordOutcome(
                r.record, status, r.reason, r.decision, r.version, error, result
            )
    return DispatchResult(tuple(o for o in outcomes if o is not None))


def consume_and_dispatch(
    stream: Stream,
    topic: str,
    group: str,
    consumer: str,
    handlers_by_version: Mapping[str, Handler],
    *,
    app: str,
    function: str,
    router: Router,
    max_records: int = 100,
    timeout: float = 1.0,
    **options: Any,
) -> DispatchResult:
    """Consume one batch, `dispatch` it, and ack the records that succeeded.

    Failed and skipped records stay unacked: the stream delivers them again
    after its ack wait. ``options`` are `dispatch`'s.
    """
    records = stream.consume(topic, group, consumer, max_records=max_records, timeout=timeout)
    if not records:
        return DispatchResult(())
    result = dispatch(
        records, handlers_by_version, app=app, function=function, router=router, **options
    )
    done = result.succeeded
    if done:
        stream.ack(topic, group, done)
    return result
