"""In-function routing: a Lambda handler that forwards canary users to their version.

For teams with no gateway in front of API Gateway. The function's alias
stays 100% on the stable version; ``@route_lambda(client, "shop", "api",
user="x-user-id")`` wraps its handler. Each invocation is decided as by
`coalmine.sdk.handler` (which this builds on: a valid incoming context pins
the channel), then, by `coalmine.core.forwarding.plan_forward`:

- when the decided version of ``function`` is the one running (its Lambda
  target's qualifier is ``context.function_version``, or the alias the
  invocation came through), the handler runs here;
- otherwise the decided version is invoked (Invoke API, that ``Qualifier``)
  with the same event, the signed context in its ``headers.baggage`` (for
  an API Gateway-shaped event) and in the ``ClientContext``, marked as
  forwarded, and its answer is returned. A function error of the forwarded
  invocation raises `ForwardedError` here, so the caller sees an error too;
- a forwarded invocation always runs where it landed, whatever its own
  snapshot says: two environments holding different snapshots cannot bounce
  an invocation between them.

So only users whose channel runs another version pay one extra hop. Batch
events (``Records``: SQS, Kinesis) run here; splitting a batch by channel is
the event-source router's job. A version whose target is not a Lambda one
(or is unknown to the snapshot) runs here too.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

from coalmine._extras import require
from coalmine.core.errors import InvalidInput
from coalmine.core.forwarding import ForwardPlan, ForwardReason, LambdaRef, lambda_ref, plan_forward
from coalmine.core.model import Decision
from coalmine.core.ports import HandlerClient
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.sdk.handler import UserKey, count_as, handler, is_batch
from coalmine.sdk.invoke import (
    CLIENT_CONTEXT_KEY,
    FORWARDED_KEY,
    client_context,
    inject_event,
    was_forwarded,
)
from coalmine.sdk.scope import current_scope

__all__ = [
    "ForwardedError",
    "RoutingClient",
    "plan_invocation",
    "route_lambda",
]

log = logging.getLogger("coalmine.sdk")
F = TypeVar("F", bound=Callable[..., Any])


class RoutingClient(HandlerClient, Protocol):
    """What `route_lambda` needs: a handler client that also gives the app's snapshot
    (for the versions' targets). `coalmine.sdk.Client` is one."""

    def snapshot(self, app: str) -> RoutingSnapshot | None: ...


class ForwardedError(Exception):
    """The forwarded invocation failed (``X-Amz-Function-Error``); the message holds its error."""

    def __init__(self, target: LambdaRef, kind: str, payload: bytes) -> None:
        self.target, self.kind, self.payload = target, kind, payload
        detail = payload[:500].decode("utf-8", "replace")
        super().__init__(
            f"the forwarded invocation of {target.name}:{target.qualifier} failed ({kind}): {detail}"
        )


def _qualifier_of(arn: object) -> str | None:
    """The qualifier of ``invoked_function_arn`` (an alias or version), if it names one."""
    if not isinstance(arn, str):
        return None
    parts = arn.split(":")
    return parts[7] if len(parts) > 7 else None


def plan_invocation(
    snap: RoutingSnapshot | None, function: str, decision: Decision, lambda_context: object
) -> ForwardPlan:
    """Run here or forward, for this invocation of ``function`` (see the module)."""
    running = getattr(lambda_context, "function_version", None)
    invoked = _qualifier_of(getattr(lambda_context, "invoked_function_arn", None))
    version = decision.version_of(function)
    target = None
    if snap is not None and version is not None:
        try:
            target = lambda_ref(snap.target_of(function, version))
        except InvalidInput:
            target = None
    return plan_forward(
        running if isinstance(running, str) else None,
        invoked,
        target,
        forwarded=was_forwarded(lambda_context),
    )


def _running_version(
    snap: RoutingSnapshot | None, function: str, lambda_context: object
) -> str | None:
    """The coalmine version whose Lambda target is what runs here, if the snapshot says."""
    if snap is None:
        return None
    running = getattr(lambda_context, "function_version", None)
    invoked = _qualifier_of(getattr(lambda_context, "invoked_function_arn", None))
    for version, target in snap.targets.get(function, {}).items():
        try:
            ref = lambda_ref(target)
        except InvalidInput:
            continue
        if ref is not None and ref.qualifier in (running, invoked):
            return version
    return None


def route_lambda(
    client: RoutingClient,
    app: str,
    function: str,
    *,
    user: UserKey = None,
    lambda_client: Any = None,
) -> Callable[[F], F]:
    """Decorate the ``handler(event, context)`` of ``function`` with in-function routing.

    ``lambda_client`` invokes forwarded versions (a boto3 Lambda client; by
    default ``boto3.client("lambda")`` is made on the first forward, from the
    standard AWS configuration: the ``aws`` extra, which Lambda runtimes ship).
    Invocations are counted in the client's per-version metrics as
    `coalmine.sdk.handler` does, under the version that actually ran them.
    """
    clients: list[Any] = [lambda_client] if lambda_client is not None else []

    def invoker() -> Any:
        if not clients:
            boto3 = require("boto3", "aws")
            config = require("botocore.config", "aws").Config(
                # a forwarded call lasts as long as the function may; a retry would run it twice
                read_timeout=900,
                connect_timeout=5,
                retries={"mode": "standard", "max_attempts": 1},
            )
            clients.append(boto3.client("lambda", config=config))
        return clients[0]

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):
            raise TypeError(
                "route_lambda wraps a synchronous handler(event, context), as the Lambda"
                " Python runtime calls it"
            )

        @functools.wraps(fn)
        def routed(event: Any, context: Any = None, *args: Any, **kwargs: Any) -> Any:
            scope = current_scope()
            if is_batch(event) or scope is None:
                return fn(event, context, *args, **kwargs)
            snap = client.snapshot(app)
            plan = plan_invocation(snap, function, scope.decision, context)
            if plan.forward:
                assert plan.target is not None
                count_as(None)  # the forwarded version counts its own invocation
                return _forward(invoker(), plan.target, event, scope.token)
            if plan.reason is ForwardReason.FORWARDED and log.isEnabledFor(logging.DEBUG):
                log.debug("coalmine: %s runs a forwarded invocation here", function)
            count_as(_running_version(snap, function, context))
            return fn(event, context, *args, **kwargs)

        decorated = handler(client, app, user=user, function=function)(routed)
        return cast(F, decorated)

    return decorate


def _forward(lambda_client: Any, target: LambdaRef, event: Any, token: str | None) -> Any:
    custom = {FORWARDED_KEY: "1"}
    if token is not None:
        custom[CLIENT_CONTEXT_KEY] = token
        event = inject_event(event, token)
    params: dict[str, Any] = {
        "FunctionName": target.function_name,
        "Qualifier": target.qualifier,
        "Payload": json.dumps(event, separators=(",", ":")).encode(),
    }
    cc = client_context(None, custom)
    if cc is None:  # unreachable with coalmine's own keys, but never forward unmarked
        raise RuntimeError("coalmine: the forwarding ClientContext is too large")
    params["ClientContext"] = cc
    response = lambda_client.invoke(**params)
    body = response["Payload"].read()
    error = response.get("FunctionError")
    if error:
        raise ForwardedError(target, str(error), body)
    return json.loads(body) if body else None
