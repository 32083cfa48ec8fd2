"""The article's chain as Lambda handlers with in-function routing and no gateway.

``api`` (behind the alias ``live``, which stays on version 1) is an HTTP API
entry function wrapped by `route_lambda`; it calls ``notify-user`` through an
instrumented boto3 client, which sends the call to the version of the
user's channel. Each Lambda version loads this module on its own (as its own
execution environment), so each has its own `Client` and snapshot.

Configured by the environment, as a deployed function would be:
``COALMINE_URL``, ``COALMINE_SDK_KEY``, ``COALMINE_SIGNING_KEYS``,
``COALMINE_MAX_AGE``, and the standard AWS variables (``AWS_ENDPOINT_URL_LAMBDA``).
"""

from __future__ import annotations

import json
import threading
from typing import Any

from coalmine.sdk import Client, current_decision, route_lambda
from tests.aws.fake_lambda import environment

APP = "shop"
_lock = threading.Lock()
_made: dict[str, Any] = {}


def _setup() -> tuple[Client, Any]:
    with _lock:
        if not _made:
            _made.update(environment(APP))
        return _made["client"], _made["lam"]


def _version(context: Any) -> str:
    return f"v{context.function_version}"


def api(event: dict[str, Any], context: Any) -> Any:
    client, lam = _setup()
    return route_lambda(client, APP, "api", user="x-user-id", lambda_client=lam)(_api)(
        event, context
    )


def _api(event: dict[str, Any], context: Any) -> dict[str, Any]:
    _, lam = _setup()
    user = event["headers"]["x-user-id"]
    answer = lam.invoke(FunctionName="notify-user", Payload=json.dumps({"user": user}))
    notified = json.loads(answer["Payload"].read())
    decision = current_decision()
    body = {
        "chain": [["api", _version(context)], notified["ran"]],
        "channel": str(decision.channel) if decision else None,
    }
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body),
    }


def notify_user(event: dict[str, Any], context: Any) -> Any:
    client, lam = _setup()
    return route_lambda(
        client, APP, "notify-user", user=lambda e: e.get("user"), lambda_client=lam
    )(_notify)(event, context)


def _notify(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"ran": ["notify-user", _version(context)]}
