"""Lambda to Lambda: the routing context on the Invoke API, and an instrumented boto3 client.

`instrument_lambda(lambda_client, source, app)` registers a botocore event
hook (``provide-client-params.lambda.Invoke``) on one boto3 Lambda client.
While a decision of ``app`` is current (`coalmine.sdk.use`, or inside a
decorated handler), ``client.invoke(FunctionName="notify-user", ...)``

- goes to the version of the current user's channel: when ``notify-user``
  is a function of the app (by its coalmine name, or by the Lambda function
  name of one of its versions' targets) and the decided version's target is
  a Lambda one, the call gets that ``Qualifier`` (and that function name,
  when the target names another Lambda function);
- carries the signed context: always in the Invoke ``ClientContext``'s
  ``custom`` map under ``coalmine`` (read by the callee's decorated handler),
  and in ``headers.baggage`` when the payload is an API Gateway-shaped JSON
  event (it has ``headers`` or ``requestContext``), so any HTTP-style
  handler reads it too.

A ``FunctionName`` that names a qualifier itself, or an explicit
``Qualifier``, wins: the call is not rerouted (it still carries the
context). Functions of other apps, functions unknown to the snapshot, and
calls made outside a decision pass through untouched.

boto3 is not imported here: the caller passes the client (the base install
stays small; Lambda runtimes ship boto3).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping, MutableMapping
from typing import Any

from coalmine.core.errors import InvalidInput
from coalmine.core.forwarding import LambdaRef, lambda_ref
from coalmine.core.model import Decision
from coalmine.core.ports import SnapshotSource
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.sdk.carriers import HEADER, inject_http
from coalmine.sdk.scope import current_scope

__all__ = [
    "CLIENT_CONTEXT_KEY",
    "FORWARDED_KEY",
    "client_context",
    "context_token",
    "inject_event",
    "instrument_lambda",
    "invocation_custom",
    "uninstrument_lambda",
    "was_forwarded",
]

log = logging.getLogger("coalmine.sdk")

CLIENT_CONTEXT_KEY = "coalmine"
"""the ``ClientContext.custom`` key of the signed routing context"""
FORWARDED_KEY = "coalmine-forwarded"
"""the ``ClientContext.custom`` key marking an invocation forwarded by `route_lambda`. Only
the Invoke API sets a ClientContext (API Gateway cannot), so a caller over HTTP cannot
forge it to pin itself to the version its request landed on"""
_MAX_CLIENT_CONTEXT = 3583
"""bytes of base64 the Invoke API accepts in ``ClientContext``"""
_EVENTS = (
    "provide-client-params.lambda.Invoke",
    "provide-client-params.lambda.InvokeWithResponseStream",
)
_HOOK_ID = "coalmine-lambda-routing"


# the callee side ---------------------------------------------------------------------


def invocation_custom(lambda_context: object) -> Mapping[str, Any]:
    """The ``custom`` map of a Lambda context's client context (empty when there is none)."""
    cc = getattr(lambda_context, "client_context", None)
    if isinstance(lambda_context, Mapping):
        cc = lambda_context.get("client_context")
    custom = cc.get("custom") if isinstance(cc, Mapping) else getattr(cc, "custom", None)
    return custom if isinstance(custom, Mapping) else {}


def context_token(lambda_context: object) -> str | None:
    """The signed routing context an invoking function put in the client context, if any."""
    value = invocation_custom(lambda_context).get(CLIENT_CONTEXT_KEY)
    return value if isinstance(value, str) and value else None


def was_forwarded(lambda_context: object) -> bool:
    """Whether `route_lambda` forwarded this invocation from another version."""
    return invocation_custom(lambda_context).get(FORWARDED_KEY) == "1"


# the caller side ---------------------------------------------------------------------


def client_context(existing: str | None, custom: Mapping[str, str]) -> str | None:
    """The base64 ``ClientContext`` with ``custom`` merged into the caller's own (if any).

    None when the result would exceed the Invoke API's limit (the caller's own
    context is then sent unchanged, and the callee decides for itself).
    """
    doc: dict[str, Any] = {}
    if existing:
        try:
            decoded = json.loads(base64.b64decode(existing, validate=True))
        except (ValueError, binascii.Error):
            log.warning("coalmine: the ClientContext given to invoke is not base64 JSON; kept")
            return None
        if not isinstance(decoded, dict):
            return None
        doc = decoded
    mine = doc.get("custom")
    doc["custom"] = {**(mine if isinstance(mine, dict) else {}), **custom}
    encoded = base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()
    if len(encoded) > _MAX_CLIENT_CONTEXT:
        log.warning("coalmine: the ClientContext would exceed 3583 bytes: context not added")
        return None
    return encoded


def inject_event(event: Any, token: str) -> Any:
    """A copy of an API Gateway-shaped event with the context in its ``baggage`` header.

    Anything else (a bare value, an event without ``headers`` or
    ``requestContext``) is returned as it is.
    """
    if not isinstance(event, Mapping):
        return event
    headers = event.get("headers")
    multi = event.get("multiValueHeaders")
    if not isinstance(headers, Mapping) and "requestContext" not in event:
        return event
    out = dict(event)
    new_headers: MutableMapping[str, Any] = dict(headers) if isinstance(headers, Mapping) else {}
    inject_http(new_headers, token)
    out["headers"] = new_headers
    if isinstance(multi, Mapping):
        # REST API events: the multi-value form wins where present, so keep both in step
        joined = {
            k: ",".join(v for v in vs if isinstance(v, str))
            for k, vs in multi.items()
            if isinstance(k, str) and k.lower() == HEADER and isinstance(vs, list)
        }
        inject_http(joined, token)
        rest = {k: v for k, v in multi.items() if not (isinstance(k, str) and k.lower() == HEADER)}
        out["multiValueHeaders"] = {**rest, **{k: [v] for k, v in joined.items()}}
    return out


def _inject_payload(payload: Any, token: str) -> Any:
    if not isinstance(payload, bytes | bytearray | str):
        return payload  # a file object: not ours to read
    try:
        event = json.loads(payload)
    except ValueError:
        return payload
    injected = inject_event(event, token)
    if injected is event:
        return payload
    return json.dumps(injected, separators=(",", ":")).encode()


def _split(function_name: str) -> tuple[str, bool]:
    """(the bare function name, whether FunctionName names a qualifier itself)."""
    parts = function_name.split(":")
    if function_name.startswith("arn:"):
        return (parts[6] if len(parts) > 6 else function_name), len(parts) > 7
    if len(parts) >= 3 and parts[1] == "function":  # ACCOUNT:function:NAME[:QUALIFIER]
        return parts[2], len(parts) > 3
    return parts[0], len(parts) > 1


class _Index:
    """Lambda function name -> coalmine function, for one snapshot revision."""

    def __init__(self) -> None:
        self.snapshot: RoutingSnapshot | None = None
        self.by_name: dict[str, str] = {}

    def function(self, snap: RoutingSnapshot, name: str) -> str | None:
        if snap is not self.snapshot:
            by_name: dict[str, str] = {}
            for function, targets in snap.targets.items():
                for target in targets.values():
                    try:
                        ref = lambda_ref(target)
                    except InvalidInput:
                        continue
                    if ref is not None:
                        by_name.setdefault(ref.name, function)
            for function in snap.targets:
                by_name[function] = function  # a function's coalmine name wins
            self.snapshot, self.by_name = snap, by_name
        return self.by_name.get(name)


def _route(snap: RoutingSnapshot, function: str, decision: Decision) -> LambdaRef | None:
    version = decision.version_of(function)
    if version is None:
        return None
    try:
        return lambda_ref(snap.target_of(function, version))
    except InvalidInput:
        return None


def instrument_lambda(lambda_client: Any, source: SnapshotSource, app: str) -> None:
    """Route ``lambda_client.invoke`` calls of ``app``'s functions by the current decision.

    ``source`` gives the app's snapshot (a `coalmine.sdk.Client`); see the module.
    Idempotent per client and app; a client may be instrumented for several apps.
    """
    meta = getattr(lambda_client, "meta", None)
    service = getattr(getattr(meta, "service_model", None), "service_name", None)
    if service != "lambda":
        raise InvalidInput(
            "instrument_lambda needs a boto3 Lambda client, e.g. boto3.client('lambda');"
            f" got {type(lambda_client).__name__}"
        )
    index = _Index()

    def before_invoke(params: dict[str, Any], **_: Any) -> None:
        scope = current_scope()
        if scope is None or scope.decision.app != app:
            return
        try:
            snap = source.snapshot(app)
            name = params.get("FunctionName")
            if snap is None or not isinstance(name, str):
                return
            bare, qualified = _split(name)
            function = index.function(snap, bare)
            if function is None:
                return
            if not qualified and "Qualifier" not in params:
                ref = _route(snap, function, scope.decision)
                if ref is not None:
                    params["Qualifier"] = ref.qualifier
                    if ref.name != bare:
                        params["FunctionName"] = ref.function_name
            if scope.token is not None:
                custom = {CLIENT_CONTEXT_KEY: scope.token}
                cc = client_context(params.get("ClientContext"), custom)
                if cc is not None:
                    params["ClientContext"] = cc
                if "Payload" in params:
                    params["Payload"] = _inject_payload(params["Payload"], scope.token)
        except Exception as exc:  # a call is never broken by routing: it goes out as given
            log.warning(
                "coalmine: cannot route the invoke of %s: %s", params.get("FunctionName"), exc
            )

    for event in _EVENTS:
        lambda_client.meta.events.register(event, before_invoke, unique_id=f"{_HOOK_ID}-{app}")


def uninstrument_lambda(lambda_client: Any, app: str) -> None:
    """Undo `instrument_lambda` for ``app`` on this client."""
    for event in _EVENTS:
        lambda_client.meta.events.unregister(event, unique_id=f"{_HOOK_ID}-{app}")
