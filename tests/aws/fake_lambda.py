"""Helpers for tests of coalmine on AWS Lambda (the in-function routing tests and e2e).

`FakeLambda` is an in-process stand-in for a boto3 Lambda client's ``invoke``:
it runs Python handlers registered per (function, qualifier), resolves
aliases to versions, and hands each a Lambda-like context
(``function_name``, ``function_version``, ``invoked_function_arn``,
``client_context.custom``) decoded from the call's ``ClientContext``, as the
Lambda service does. Each (function, version) can hold its own handler, so
two execution environments with different routing snapshots are two
handlers. Behaviour over the real Invoke protocol uses LocalLambda.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from coalmine.core.model import Release
from coalmine.core.routing import RoutingState
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.core.strategy import parse_strategy

REGION, ACCOUNT = "us-east-1", "123456789012"
APP = "shop"


def arn(function: str, qualifier: str | None = None) -> str:
    base = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}"
    return f"{base}:{qualifier}" if qualifier else base


def lambda_snapshot(exposure: int, revision: int = 1, *, phase: str = "running") -> RoutingSnapshot:
    """shop: ``api`` v1 -> v2 and ``notify-user`` v1 -> v2, each version a Lambda version."""
    release = Release(
        id="shop-1",
        app=APP,
        baseline={"api": "v1", "notify-user": "v1"},
        candidate={"api": "v2", "notify-user": "v2"},
        salt="0123456789abcdef",
        strategy=parse_strategy("20%:10m, 60%:10m, 100%"),
        exposure=exposure,
        phase=phase,  # type: ignore[arg-type]
    )
    state = RoutingState(APP, {"api": "v1", "notify-user": "v1"}, release)
    targets = {
        "api": {"v1": arn("api", "1"), "v2": arn("api", "2")},
        "notify-user": {"v1": "lambda:notify-user:1", "v2": "lambda:notify-user:2"},
    }
    return RoutingSnapshot(state, revision, targets)


Handler = Callable[[Any, Any], Any]

OPENED: list[Any] = []
"""clients the handler modules made (one set per Lambda version), closed by `close_opened`"""


def close_opened() -> None:
    while OPENED:
        OPENED.pop().close()


def environment(app: str, *services: str) -> dict[str, Any]:
    """What one Lambda environment of a test chain makes once, from the environment as a
    deployed function does: a `Client` refreshing at invocation (``client``), a boto3
    Lambda client routed by it (``lam``), and a boto3 client per extra service."""
    import boto3

    from coalmine.sdk import Client, instrument_lambda

    client = Client(
        os.environ["COALMINE_URL"],
        os.environ["COALMINE_SDK_KEY"],
        apps=[app],
        max_age=float(os.environ.get("COALMINE_MAX_AGE", "5")),
        metrics=False,
    )
    lam = boto3.client("lambda")
    instrument_lambda(lam, client, app)
    made: dict[str, Any] = {"client": client, "lam": lam}
    made.update({service: boto3.client(service) for service in services})
    OPENED.extend(made.values())
    return made


@dataclass
class Call:
    function: str
    qualifier: str
    version: str
    event: Any
    custom: dict[str, Any]


@dataclass
class FakeLambda:
    """``invoke(FunctionName=..., Qualifier=..., Payload=..., ClientContext=...)`` in process."""

    handlers: dict[tuple[str, str], Handler] = field(default_factory=dict)
    aliases: dict[tuple[str, str], str] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def deploy(self, function: str, version: str, handler: Handler) -> None:
        self.handlers[(function, version)] = handler

    def alias(self, function: str, alias: str, version: str) -> None:
        self.aliases[(function, alias)] = version

    def invoke(self, **params: Any) -> dict[str, Any]:
        name = params["FunctionName"].split(":function:")[-1]
        qualifier = params.get("Qualifier", "$LATEST")
        version = self.aliases.get((name, qualifier), qualifier)
        custom: dict[str, Any] = {}
        if "ClientContext" in params:
            custom = json.loads(base64.b64decode(params["ClientContext"])).get("custom", {})
        event = json.loads(params.get("Payload") or b"null")
        self.calls.append(Call(name, qualifier, version, event, custom))
        context = lambda_context(name, version, qualifier, custom)
        try:
            answer = self.handlers[(name, version)](event, context)
        except Exception as exc:
            body = {"errorMessage": str(exc), "errorType": type(exc).__name__}
            return {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": _body(body)}
        return {"StatusCode": 200, "Payload": _body(answer)}


def lambda_context(
    function: str, version: str, qualifier: str | None = None, custom: dict[str, Any] | None = None
) -> SimpleNamespace:
    """A context as the Lambda Python runtime passes it (the fields coalmine reads)."""
    return SimpleNamespace(
        function_name=function,
        function_version=version,
        invoked_function_arn=arn(function, qualifier),
        client_context=SimpleNamespace(custom=custom or {}, client=None, env=None)
        if custom
        else None,
        aws_request_id="req-1",
    )


def _body(value: Any) -> io.BytesIO:
    return io.BytesIO(json.dumps(value).encode())


def http_event(user: str, *, path: str = "/orders", baggage: str | None = None) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) event."""
    headers = {"x-user-id": user, "content-type": "application/json"}
    if baggage is not None:
        headers["baggage"] = baggage
    return {
        "version": "2.0",
        "routeKey": f"POST {path}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {"http": {"method": "POST", "path": path}, "stage": "$default"},
        "body": json.dumps({"item": "pie"}),
        "isBase64Encoded": False,
    }


@contextmanager
def fake_aws_env(**extra: str) -> Iterator[None]:
    """Fake credentials and a region (and ``extra`` variables), restored afterwards."""
    values = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        **extra,
    }
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
