"""Route the batches of a Lambda event source mapping by channel, with no gateway.

An event source mapping (Kinesis, SQS) is attached to one alias of the
consuming function, the *stable* one. `route_batch` wraps that function's
handler. For each batch event it

1. decides every record (its routing context first, else its user key);
2. runs, through the wrapped handler, the records whose decided version is
   the one running (``context.function_version``, or the alias it was invoked
   through, matched against the version's target in the routing snapshot);
3. invokes every other version (Lambda Invoke, RequestResponse, with the
   target's qualifier) once, with a batch event of the same shape holding just
   its records in their original order, marked as forwarded: a forwarded
   batch is always run where it lands, never forwarded again (no loops, even
   when the two versions' snapshots disagree). The mark carries each record's
   signed context, so the other version runs the chain the record was decided
   into even where the record itself has no context (a Kinesis record from a
   producer without coalmine);
4. answers Lambda's partial batch response, ``{"batchItemFailures":
   [{"itemIdentifier": ...}]}`` (Kinesis ``kinesis.sequenceNumber``, SQS
   ``messageId``): the event source mapping needs
   ``FunctionResponseTypes=["ReportBatchItemFailures"]``.

Order holds per Kinesis shard (``eventSourceARN`` and the shard of
``eventID``) and per SQS FIFO message group (``attributes.MessageGroupId``):
the local records run first; records of another version that come after a
local failure of their shard or group are not sent; and once any record of a
shard or group has failed, every later record of it is reported failed (for
Kinesis, Lambda resumes the shard from the lowest reported sequence number;
for FIFO it redelivers the group in order). A later record of the local
version may already have run when a forwarded record before it fails: it is
reported failed and comes again (at least once, as with any Lambda retry).
Records of a standard SQS queue have no order: only those that failed are
reported. A forwarded invoke that fails as a call (throttled, timed out) or
as a function (``X-Amz-Function-Error``) fails all of its records; its own
``batchItemFailures`` fail those records.

A record whose decided version has no Lambda target in the snapshot (no
snapshot yet, a local-handler target) runs where it is (fail static) and is
logged. The invoker (`coalmine.core.ports.LambdaInvoker`) is injectable; the
default, `Boto3Invoker`, builds a boto3 Lambda client from the standard AWS
configuration chain on its first forward (the ``aws`` extra).
"""

from __future__ import annotations

import base64
import functools
import inspect
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from coalmine._extras import require
from coalmine.core.errors import InvalidInput
from coalmine.core.forwarding import LambdaRef, lambda_ref
from coalmine.core.model import Decision
from coalmine.core.ports import LambdaInvocation, LambdaInvoker, SnapshotClient
from coalmine.sdk.aws_carriers import aws_user
from coalmine.sdk.envelope import ENVELOPE_VERSION
from coalmine.sdk.handler import (
    RecordDecision,
    UserKey,
    batch_scope,
    failed_records,
    record_context,
    record_id,
    record_user,
)

__all__ = [
    "FORWARD_FIELD",
    "Boto3Invoker",
    "LambdaFunction",
    "parse_lambda_target",
    "route_batch",
]

log = logging.getLogger("coalmine.sdk")

FORWARD_FIELD = "coalmine"
"""the top-level field of a forwarded batch event:
``{"forwarded_by": "<function>:<version>", "contexts": [<token or null> per record]}``"""

F = TypeVar("F", bound=Callable[..., Any])


LambdaFunction = LambdaRef
"""One version of a Lambda function (`coalmine.core.forwarding.LambdaRef`)."""


def parse_lambda_target(ref: str | None) -> LambdaRef | None:
    """The function and qualifier of a version's target, or None when it is not a
    (qualified) Lambda one: `coalmine.core.forwarding.lambda_ref`, where an unqualified
    Lambda target runs the records here instead of raising (fail static)."""
    try:
        return lambda_ref(ref)
    except InvalidInput:
        return None


class Boto3Invoker:
    """A `LambdaInvoker` over a boto3 Lambda client (the ``aws`` extra).

    Without ``client``, one is made on the first invoke from the standard AWS
    configuration chain (credentials, region, ``AWS_ENDPOINT_URL_LAMBDA``), with
    a read timeout as long as a Lambda may run and no retries: a retried
    invoke could run the records twice, while a failed one fails its records,
    which the event source mapping delivers again.
    """

    def __init__(self, client: Any = None, *, read_timeout: float = 905.0) -> None:
        self._client = client
        self._read_timeout = read_timeout
        self._lock = threading.Lock()

    def _lambda(self) -> Any:
        with self._lock:
            if self._client is None:
                boto3 = require("boto3", "aws")
                config = require("botocore.config", "aws").Config(
                    read_timeout=self._read_timeout, retries={"total_max_attempts": 1}
                )
                self._client = boto3.client("lambda", config=config)
            return self._client

    def invoke(self, function: str, qualifier: str, payload: bytes) -> LambdaInvocation:
        response = self._lambda().invoke(
            FunctionName=function,
            Qualifier=qualifier,
            InvocationType="RequestResponse",
            Payload=payload,
        )
        body = response.get("Payload")
        data = body.read() if hasattr(body, "read") else (body or b"")
        return LambdaInvocation(
            bytes(data), response.get("FunctionError"), int(response.get("StatusCode", 200))
        )


# reading the batch -----------------------------------------------------------------


def _is_esm_batch(event: object) -> bool:
    if not isinstance(event, Mapping):
        return False
    records = event.get("Records")
    return (
        isinstance(records, list)
        and bool(records)
        and all(
            isinstance(r, Mapping) and r.get("eventSource") in ("aws:kinesis", "aws:sqs")
            for r in records
        )
    )


def _order_key(record: Mapping[str, Any]) -> str | None:
    """Where order holds for ``record``: its Kinesis shard or SQS FIFO message group."""
    source = str(record.get("eventSourceARN", ""))
    kinesis = record.get("kinesis")
    if isinstance(kinesis, Mapping):
        event_id = record.get("eventID")
        if isinstance(event_id, str) and ":" in event_id:
            return f"{source}|{event_id.split(':', 1)[0]}"
        return f"{source}|{kinesis.get('partitionKey')}"
    attributes = record.get("attributes")
    group = attributes.get("MessageGroupId") if isinstance(attributes, Mapping) else None
    return f"{source}|{group}" if isinstance(group, str) else None


def _carrier_user(record: Mapping[str, Any]) -> str | None:
    """coalmine's own user key: the Kinesis envelope's ``user``, or the message attribute."""
    kinesis = record.get("kinesis")
    if isinstance(kinesis, Mapping):
        try:
            doc = json.loads(base64.b64decode(kinesis.get("data", "")))
        except (ValueError, TypeError):
            return None
        user = doc.get("user") if isinstance(doc, dict) else None
        ok = isinstance(doc, dict) and doc.get("coalmine") == ENVELOPE_VERSION
        return user if ok and isinstance(user, str) and user else None
    return aws_user(record)


def _forwarded_contexts(event: Mapping[str, Any], count: int) -> list[str | None] | None:
    mark = event.get(FORWARD_FIELD)
    if not isinstance(mark, Mapping) or not mark.get("forwarded_by"):
        return None
    contexts = mark.get("contexts")
    if not isinstance(contexts, list) or len(contexts) != count:
        return [None] * count
    return [c if isinstance(c, str) and c else None for c in contexts]


def _invoked_qualifier(context: Any) -> str | None:
    arn = getattr(context, "invoked_function_arn", None)
    if isinstance(arn, str) and arn.count(":") == 7:
        return arn.rsplit(":", 1)[1]
    return None


# the router ------------------------------------------------------------------------


class _BatchRouter:
    def __init__(
        self,
        client: SnapshotClient,
        app: str,
        function: str,
        user: UserKey,
        version: str | None,
        invoker: LambdaInvoker | None,
        metrics: bool,
    ) -> None:
        self.client = client
        self.app = app
        self.function = function
        self.user = user
        self.version = version
        self._invoker = invoker
        self.metrics = metrics

    @property
    def invoker(self) -> LambdaInvoker:
        if self._invoker is None:
            self._invoker = Boto3Invoker()
        return self._invoker

    def _decide(
        self, records: Sequence[Mapping[str, Any]], contexts: list[str | None] | None
    ) -> list[RecordDecision]:
        out: list[RecordDecision] = []
        tokens: dict[tuple[object, ...], str | None] = {}
        for i, record in enumerate(records):
            try:
                incoming = contexts[i] if contexts is not None else None
                context = incoming if incoming is not None else record_context(record)
                if self.user is None:
                    user_key = _carrier_user(record)
                else:
                    user_key = record_user(record, self.user)
            except Exception as exc:
                log.warning("coalmine: cannot read the routing context of record %d: %s", i, exc)
                context, user_key = None, None
            decision = self.client.decide(self.app, user_key, context)
            key = (
                decision.release_id,
                decision.channel,
                decision.reason,
                tuple(decision.versions.items()),
                decision.binding,  # a context is bound to its user
            )
            if key not in tokens:
                tokens[key] = self.client.encode(decision)
            out.append(RecordDecision(i, record, decision, tokens[key]))
        return out

    def _is_running(self, version: str | None, target: LambdaFunction, context: Any) -> bool:
        if self.version is not None and version == self.version:
            return True
        name = getattr(context, "function_name", None)
        if isinstance(name, str) and name != target.name:
            return False
        running = {getattr(context, "function_version", None), _invoked_qualifier(context)}
        return target.qualifier in running

    def _where(self, decision: Decision, context: Any) -> LambdaFunction | None:
        """The version to forward to, or None to run the record here."""
        version = decision.version_of(self.function)
        if version is None or version == self.version:
            return None
        snapshot = self.client.snapshot(self.app)
        target = parse_lambda_target(
            snapshot.target_of(self.function, version) if snapshot is not None else None
        )
        if target is None:
            log.warning(
                "coalmine: %s %s has no Lambda target in the routing snapshot: its records"
                " run here",
                self.function,
                version,
            )
            return None
        return None if self._is_running(version, target, context) else target

    def _running_version(self, context: Any) -> str | None:
        if self.version is not None:
            return self.version
        snapshot = self.client.snapshot(self.app)
        if snapshot is None:
            return None
        for version, ref in snapshot.targets.get(self.function, {}).items():
            target = parse_lambda_target(ref)
            if target is not None and self._is_running(version, target, context):
                return version
        return None

    def _run_here(
        self,
        fn: Callable[..., Any],
        event: Mapping[str, Any],
        picked: list[RecordDecision],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> set[int]:
        """Run ``picked`` through the handler; the indices (in the batch) that failed."""
        sub = {k: v for k, v in event.items() if k != FORWARD_FIELD}
        sub["Records"] = [r.record for r in picked]
        scoped = tuple(
            RecordDecision(j, r.record, r.decision, r.token) for j, r in enumerate(picked)
        )
        try:
            with batch_scope(scoped):
                result = fn(sub, *args, **kwargs)
        except Exception:
            log.exception("coalmine: the handler failed its batch of %d records", len(picked))
            return {r.index for r in picked}
        failed = failed_records(result)
        return {r.index for r in picked if record_id(r.record) in failed}

    def _forward(
        self, event: Mapping[str, Any], picked: list[RecordDecision], to: LambdaFunction, by: str
    ) -> set[int]:
        sub = {k: v for k, v in event.items() if k != FORWARD_FIELD}
        sub["Records"] = [r.record for r in picked]
        sub[FORWARD_FIELD] = {
            "forwarded_by": by,
            "contexts": [r.token for r in picked],
        }
        everything = {r.index for r in picked}
        try:
            answer = self.invoker.invoke(to.function_name, to.qualifier, json.dumps(sub).encode())
        except Exception as exc:
            log.warning(
                "coalmine: forwarding %d records to %s:%s failed: %s",
                len(picked),
                to.function_name,
                to.qualifier,
                exc,
            )
            return everything
        if answer.function_error:
            log.warning(
                "coalmine: %s:%s failed its %d forwarded records (%s): %s",
                to.function_name,
                to.qualifier,
                len(picked),
                answer.function_error,
                answer.payload[:500].decode("utf-8", "replace"),
            )
            return everything
        try:
            result = json.loads(answer.payload) if answer.payload.strip() else None
        except ValueError:
            result = None
        failed = failed_records(result)
        return {r.index for r in picked if record_id(r.record) in failed}

    def route(
        self, fn: Callable[..., Any], event: Mapping[str, Any], args: tuple[Any, ...], kwargs: Any
    ) -> dict[str, list[dict[str, str]]]:
        records: list[Mapping[str, Any]] = event["Records"]
        context = args[0] if args else kwargs.get("context")
        contexts = _forwarded_contexts(event, len(records))
        decided = self._decide(records, contexts)
        here: list[RecordDecision] = []
        there: dict[LambdaFunction, list[RecordDecision]] = {}
        for r in decided:
            to = None if contexts is not None else self._where(r.decision, context)
            if to is None:
                here.append(r)
            else:
                there.setdefault(to, []).append(r)
        keys = [_order_key(record) for record in records]
        failed = self._run_here(fn, event, here, args, kwargs) if here else set()
        first_failed = _first_failures(failed, keys)
        by = f"{self.function}:{self._running_version(context) or '?'}" if there else ""
        for to, picked in there.items():
            send = [r for r in picked if r.index < _limit(first_failed, keys[r.index], records)]
            failed |= {r.index for r in picked} - {r.index for r in send}
            if send:
                failed |= self._forward(event, send, to, by)
        first_failed = _first_failures(failed, keys)
        for i, key in enumerate(keys):
            if key is not None and i > first_failed.get(key, len(records)):
                failed.add(i)
        if self.metrics:
            self._count(here, failed, context)
        return _response(records, failed)

    def _count(self, here: list[RecordDecision], failed: set[int], context: Any) -> None:
        if self.client.recorder is None or not here:
            return
        try:
            running = self._running_version(context)
            for r in here:
                version = running or r.decision.version_of(self.function)
                if version is not None:
                    self.client.record(
                        self.app,
                        self.function,
                        version,
                        r.decision.channel,
                        None,
                        error=r.index in failed,
                    )
        except Exception as exc:
            log.warning("coalmine: cannot record the batch of %s: %s", self.function, exc)


def _limit(first: dict[str, int], key: str | None, records: Sequence[object]) -> int:
    """The index before which a record of ``key`` may still run (order holds per key)."""
    return first.get(key, len(records)) if key is not None else len(records)


def _first_failures(failed: set[int], keys: list[str | None]) -> dict[str, int]:
    first: dict[str, int] = {}
    for i in sorted(failed):
        key = keys[i]
        if key is not None and key not in first:
            first[key] = i
    return first


def _response(
    records: Sequence[Mapping[str, Any]], failed: set[int]
) -> dict[str, list[dict[str, str]]]:
    items = []
    for i in sorted(failed):
        identifier = record_id(records[i])
        if identifier is None:
            # Lambda fails the whole batch on an empty identifier: the safe answer
            raise RuntimeError(
                f"record {i} failed and has no messageId or sequence number to report"
            )
        items.append({"itemIdentifier": identifier})
    return {"batchItemFailures": items}


def route_batch(
    client: SnapshotClient,
    app: str,
    function: str,
    *,
    user: UserKey = None,
    version: str | None = None,
    invoker: LambdaInvoker | None = None,
    metrics: bool = True,
) -> Callable[[F], F]:
    """Wrap the handler of ``function`` behind an event source mapping; see the module.

    ``user`` says where a record's user key is (a message attribute or
    Kinesis payload key, or ``callable(record)``); by default coalmine's own
    (``coalmine-user``, the envelope's ``user``). ``version`` is the version
    of ``function`` this code is, when the targets' qualifiers cannot tell
    (by default the one whose target names the running qualifier). With
    ``metrics`` the records run here are counted per version (`Client.record`).
    The wrapped handler gets a batch event of the same shape and reads its
    records' decisions with `record_decisions()`. Events other than a Kinesis
    or SQS batch go to the handler as they are.
    """
    if not isinstance(user, str) and user is not None and not callable(user):
        raise TypeError("user must be an attribute name, a callable(record) -> str | None, or None")
    router = _BatchRouter(client, app, function, user, version, invoker, metrics)

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):
            raise TypeError("route_batch wraps a synchronous handler(event, context)")

        @functools.wraps(fn)
        def run(event: Any, *args: Any, **kwargs: Any) -> Any:
            if not _is_esm_batch(event):
                return fn(event, *args, **kwargs)
            return router.route(fn, event, args, kwargs)

        run.coalmine_app = app  # type: ignore[attr-defined]
        run.coalmine_function = function  # type: ignore[attr-defined]
        return cast(F, run)

    return decorate
