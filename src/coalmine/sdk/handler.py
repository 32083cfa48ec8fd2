"""A decorator for Lambda-style handlers: decide, then run the handler inside the decision.

``@handler(client, "shop", user="x-user-id")`` (or ``@client.handler(...)``)
wraps ``handler(event, context)``. For each invocation it

1. reads the incoming routing context from the event: the ``baggage``
   header of an API Gateway event (REST v1 ``headers`` / ``multiValueHeaders``,
   HTTP API v2 ``headers``) or of any dict with ``headers``, names compared
   case-insensitively; when the event has none, from the Lambda context's
   ``client_context.custom["coalmine"]``, where an invoking function's
   instrumented boto3 client puts it (`coalmine.sdk.instrument_lambda`);
2. finds the user key with ``user``: a header name, or ``callable(event)``;
3. decides with the client (a valid incoming context pins the channel), and
4. runs the handler inside ``use(decision, token)`` with the httpx/requests
   instrumentation on, so its outgoing HTTP calls carry the context.

An EventBridge event is one event: its context is ``detail.coalmine``
(`coalmine.sdk.aws_carriers`), and ``user`` names a key of its ``detail``.

A batch event (``{"Records": [...]}`` from SQS, SNS or Kinesis) has one user per
record, so there is no single decision: the decorator decides every record
and the handler reads them with `record_decisions()`, entering each one's
scope with ``record.use()`` while it processes that record. For a record
``user`` is an SQS or SNS message attribute name or a key of the (unwrapped)
Kinesis payload (an envelope's, or the record's own JSON), or
``callable(record)``. The context of an SQS record is
its ``baggage`` message attribute (else, for a body that is an SNS
notification or an EventBridge event, theirs); of an SNS record, its
``Sns.MessageAttributes``; of a Kinesis record, the envelope of
`coalmine.sdk.envelope` in its base64 ``kinesis.data``.

Given ``function``, every invocation is also counted in the client's
per-version metrics (`Client.record`): the version is ``version`` if given
(the build this code is), else the one the decision names for ``function``;
the channel is the decision's. An invocation fails when the handler raises,
returns a response whose ``statusCode`` is 500 or more, or (for a batch)
lists records in ``batchItemFailures``; a batch counts one call per record,
without a latency (the records share one duration). In a Lambda, when
``version`` is not given, the version is the one whose target is the running
Lambda version (`coalmine.sdk.lambda_env`), if any; and once the handler
has returned, the client writes the invocation's EMF lines and starts a
metrics flush if one is due (`Client.after_invocation`), without waiting.
"""

from __future__ import annotations

import base64
import functools
import inspect
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from coalmine.core.model import Decision
from coalmine.core.ports import HandlerClient
from coalmine.core.userkey import decode_text
from coalmine.sdk.aws_carriers import aws_context, aws_user, extract_eventbridge
from coalmine.sdk.carriers import extract_http
from coalmine.sdk.envelope import unwrap
from coalmine.sdk.instrument import instrument_httpx
from coalmine.sdk.invoke import context_token
from coalmine.sdk.scope import use

__all__ = [
    "RecordDecision",
    "UserKey",
    "batch_scope",
    "count_as",
    "decide_event",
    "decide_records",
    "event_context",
    "failed_records",
    "handler",
    "is_batch",
    "record_context",
    "record_decisions",
    "record_id",
    "record_user",
]

log = logging.getLogger("coalmine.sdk")

UserKey = str | Callable[[Any], str | None] | None
"""A header (or message attribute, or payload key) name, or a function of the event."""
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class RecordDecision:
    """One record of a batch, its decision, and the context to propagate for it."""

    index: int
    record: Any
    decision: Decision
    token: str | None

    def use(self) -> AbstractContextManager[Decision]:
        """Make this record's decision current while processing it."""
        return use(self.decision, self.token)


_batch: ContextVar[tuple[RecordDecision, ...]] = ContextVar("coalmine_batch", default=())


def record_decisions() -> tuple[RecordDecision, ...]:
    """The per-record decisions of the batch the decorated handler is processing (else empty)."""
    return _batch.get()


@contextmanager
def batch_scope(records: tuple[RecordDecision, ...]) -> Iterator[None]:
    """Make ``records`` what `record_decisions()` returns inside (for batch routers)."""
    reset = _batch.set(records)
    try:
        yield
    finally:
        _batch.reset(reset)


# reading events ----------------------------------------------------------------


def _header_pairs(event: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """API Gateway headers: multiValueHeaders where given, else headers."""
    pairs: list[tuple[str, Any]] = []
    multi = event.get("multiValueHeaders")
    seen: set[str] = set()
    if isinstance(multi, Mapping):
        for name, values in multi.items():
            if isinstance(name, str) and isinstance(values, list):
                seen.add(name.lower())
                pairs.extend((name, v) for v in values if isinstance(v, str))
    headers = event.get("headers")
    if isinstance(headers, Mapping):
        pairs.extend(
            (k, v)
            for k, v in headers.items()
            if isinstance(k, str) and isinstance(v, str) and k.lower() not in seen
        )
    return pairs


def _lookup(pairs: Iterable[tuple[str, Any]], name: str) -> str | None:
    """The user key in header ``name`` of an event: percent-encoded UTF-8 or the text itself."""
    wanted = name.lower()
    for key, value in pairs:
        if key.lower() == wanted and isinstance(value, str) and value.strip(" \t"):
            return decode_text(value.strip(" \t"))
    return None


def is_batch(event: object) -> bool:
    return isinstance(event, Mapping) and isinstance(event.get("Records"), list)


def _is_eventbridge(event: Mapping[str, Any]) -> bool:
    return "detail-type" in event and isinstance(event.get("detail"), Mapping)


def event_context(event: object) -> str | None:
    """The incoming routing context of an API Gateway or EventBridge event, or a dict
    with ``headers``."""
    if not isinstance(event, Mapping):
        return None
    if _is_eventbridge(event):
        return extract_eventbridge(event)
    return extract_http(_header_pairs(event))


def _is_message(record: Mapping[str, Any]) -> bool:
    """An SQS or SNS record (or an EventBridge event): read by `coalmine.sdk.aws_carriers`."""
    return (
        "messageAttributes" in record
        or isinstance(record.get("Sns"), Mapping)
        or _is_eventbridge(record)
    )


def _kinesis(record: Mapping[str, Any]) -> tuple[Any, str | None] | None:
    kinesis = record.get("kinesis")
    if not isinstance(kinesis, Mapping) or not isinstance(kinesis.get("data"), str):
        return None
    return unwrap(base64.b64decode(kinesis["data"]))


def record_context(record: object) -> str | None:
    """The incoming routing context of an SQS, SNS or Kinesis record (or a dict with
    ``headers``)."""
    if not isinstance(record, Mapping):
        return None
    kinesis = _kinesis(record)
    if kinesis is not None:
        return kinesis[1]
    if _is_message(record):
        return aws_context(record)
    return event_context(record)


def _record_user(record: Mapping[str, Any], user: str) -> str | None:
    kinesis = _kinesis(record)
    if kinesis is not None:
        payload = kinesis[0]
        if isinstance(payload, bytes):  # not an envelope: perhaps plain JSON
            try:
                payload = json.loads(payload)
            except ValueError:
                return None
        value = payload.get(user) if isinstance(payload, Mapping) else None
        return value if isinstance(value, str) and value else None
    if _is_message(record):
        return aws_user(record, user)
    return _lookup(_header_pairs(record), user)


def record_user(record: object, user: UserKey) -> str | None:
    """The user key of a batch record, read as the decorator does with ``user``."""
    return _user_of(record, user, record=True)


def _user_of(item: Any, user: UserKey, *, record: bool) -> str | None:
    if user is None:
        return None
    if callable(user):
        value = user(item)
        return value if isinstance(value, str) and value else None
    if not isinstance(item, Mapping):
        return None
    if record:
        return _record_user(item, user)
    if _is_eventbridge(item):
        return aws_user(item, user)
    return _lookup(_header_pairs(item), user)


# deciding ----------------------------------------------------------------------


def decide_event(
    client: HandlerClient,
    app: str,
    event: object,
    user: UserKey = None,
    lambda_context: object = None,
) -> Decision:
    """The decision for an API Gateway (or ``headers``) event. Never raises.

    ``lambda_context`` (the handler's second argument) supplies the routing
    context when the event carries none (a Lambda-to-Lambda invoke).
    """
    try:
        context, user_key = event_context(event), _user_of(event, user, record=False)
        if context is None and lambda_context is not None:
            context = context_token(lambda_context)
    except Exception as exc:
        log.warning("coalmine: cannot read the routing context of the event: %s", exc)
        context, user_key = None, None
    return client.decide(app, user_key, context)


def decide_records(
    client: HandlerClient, app: str, event: object, user: UserKey = None
) -> tuple[RecordDecision, ...]:
    """One decision per record of a batch event (SQS, SNS, Kinesis). Never raises."""
    records = event.get("Records") if isinstance(event, Mapping) else None
    if not isinstance(records, list):
        return ()
    out = []
    for i, record in enumerate(records):
        try:
            context, user_key = record_context(record), _user_of(record, user, record=True)
        except Exception as exc:
            log.warning("coalmine: cannot read the routing context of record %d: %s", i, exc)
            context, user_key = None, None
        decision = client.decide(app, user_key, context)
        out.append(RecordDecision(i, record, decision, client.encode(decision)))
    return tuple(out)


# metrics -----------------------------------------------------------------------


class _Invocation:
    """What one invocation did, for the client's per-version metrics."""

    __slots__ = ("counted", "failed", "ran", "result", "started")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.failed = True  # until the handler returns
        self.result: Any = None
        self.counted = True
        self.ran: str | None = None

    def returned(self, result: Any) -> Any:
        self.failed = False
        self.result = result
        return result


_invocation: ContextVar[_Invocation | None] = ContextVar("coalmine_invocation", default=None)


def count_as(version: str | None) -> None:
    """Inside a decorated handler: count this invocation as a call of ``version``
    (the build that actually ran), or not at all with None (another version runs
    it and counts it: `coalmine.sdk.route_lambda` forwarding)."""
    run = _invocation.get()
    if run is not None:
        run.counted, run.ran = version is not None, version


def _failed_response(result: Any) -> bool:
    """A handler-declared failure: a response with a 5xx ``statusCode``."""
    if not isinstance(result, Mapping):
        return False
    status = result.get("statusCode")
    return isinstance(status, int) and not isinstance(status, bool) and status >= 500


def failed_records(result: Any) -> frozenset[str]:
    """The ``itemIdentifier`` of each record of a partial batch response."""
    items = result.get("batchItemFailures") if isinstance(result, Mapping) else None
    if not isinstance(items, list):
        return frozenset()
    return frozenset(
        str(item["itemIdentifier"])
        for item in items
        if isinstance(item, Mapping) and item.get("itemIdentifier") is not None
    )


def record_id(record: Any) -> str | None:
    """A record's identifier in a partial batch response (SQS message id, stream sequence)."""
    if not isinstance(record, Mapping):
        return None
    for outer, inner in (("kinesis", "sequenceNumber"), ("dynamodb", "SequenceNumber")):
        part = record.get(outer)
        if isinstance(part, Mapping) and part.get(inner) is not None:
            return str(part[inner])
    value = record.get("messageId")
    return str(value) if value is not None else None


def _running(client: HandlerClient, app: str, function: str) -> str | None:
    """In a Lambda, the coalmine version whose target is the running Lambda version."""
    lookup = getattr(client, "running_version", None)  # optional: a Client has it
    return lookup(app, function) if lookup is not None else None


def _after_invocation(client: HandlerClient) -> None:
    """Let the client end the invocation's metrics (EMF lines, a due Lambda flush)."""
    end = getattr(client, "after_invocation", None)  # optional: a Client has it
    if end is not None:
        try:
            end()
        except Exception as exc:
            log.warning("coalmine: cannot end the invocation's metrics: %s", exc)


def _record_event(
    client: HandlerClient,
    app: str,
    function: str | None,
    version: str | None,
    decision: Decision,
    run: _Invocation,
) -> None:
    if function is None or client.recorder is None or not run.counted:
        return
    try:
        ran = run.ran or version or _running(client, app, function) or decision.version_of(function)
        if ran is None:  # no routing configuration: which version ran is unknown
            return
        failed = run.failed or _failed_response(run.result)
        duration = (time.perf_counter() - run.started) * 1000.0
        client.record(app, function, ran, decision.channel, duration, error=failed)
    except Exception as exc:
        log.warning("coalmine: cannot record the invocation of %s: %s", function, exc)


def _record_batch(
    client: HandlerClient,
    app: str,
    function: str | None,
    version: str | None,
    records: tuple[RecordDecision, ...],
    run: _Invocation,
) -> None:
    if function is None or client.recorder is None:
        return
    try:
        failures = frozenset() if run.failed else failed_records(run.result)
        running = version or _running(client, app, function)
        for r in records:
            ran = running or r.decision.version_of(function)
            if ran is None:
                continue
            failed = run.failed or (bool(failures) and record_id(r.record) in failures)
            client.record(app, function, ran, r.decision.channel, None, error=failed)
    except Exception as exc:
        log.warning("coalmine: cannot record the batch invocation of %s: %s", function, exc)


def _lambda_context(args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
    return args[0] if args else kwargs.get("context")


def handler(
    client: HandlerClient,
    app: str,
    *,
    user: UserKey = None,
    function: str | None = None,
    version: str | None = None,
) -> Callable[[F], F]:
    """Decorate a Lambda-style ``handler(event, context)`` (sync or async); see the module."""
    if not isinstance(user, str) and user is not None and not callable(user):
        raise TypeError("user must be a header name, a callable(event) -> str | None, or None")
    instrument_httpx()

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(event: Any, *args: Any, **kwargs: Any) -> Any:
                if is_batch(event):
                    records = decide_records(client, app, event, user)
                    reset = _batch.set(records)
                    run = _Invocation()
                    try:
                        return run.returned(await fn(event, *args, **kwargs))
                    finally:
                        _batch.reset(reset)
                        _record_batch(client, app, function, version, records, run)
                        _after_invocation(client)
                decision = decide_event(client, app, event, user, _lambda_context(args, kwargs))
                with use(decision, client.encode(decision)):
                    run = _Invocation()
                    current = _invocation.set(run)
                    try:
                        return run.returned(await fn(event, *args, **kwargs))
                    finally:
                        _invocation.reset(current)
                        _record_event(client, app, function, version, decision, run)
                        _after_invocation(client)

            wrapper: Callable[..., Any] = run_async
        else:

            @functools.wraps(fn)
            def run(event: Any, *args: Any, **kwargs: Any) -> Any:
                if is_batch(event):
                    records = decide_records(client, app, event, user)
                    reset = _batch.set(records)
                    invocation = _Invocation()
                    try:
                        return invocation.returned(fn(event, *args, **kwargs))
                    finally:
                        _batch.reset(reset)
                        _record_batch(client, app, function, version, records, invocation)
                        _after_invocation(client)
                decision = decide_event(client, app, event, user, _lambda_context(args, kwargs))
                with use(decision, client.encode(decision)):
                    invocation = _Invocation()
                    current = _invocation.set(invocation)
                    try:
                        return invocation.returned(fn(event, *args, **kwargs))
                    finally:
                        _invocation.reset(current)
                        _record_event(client, app, function, version, decision, invocation)
                        _after_invocation(client)

            wrapper = run
        wrapper.coalmine_app = app  # type: ignore[attr-defined]
        wrapper.coalmine_function = function  # type: ignore[attr-defined]
        wrapper.coalmine_version = version  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorate
