"""What the food-ordering functions share: where the stream and the gateway are, and the HTTP plumbing.

A deployed function would read these from its environment; here whoever runs
the functions in-process (`coalmine demo`, a test) calls `configure` first.
Each version's module stays small and says only what that version does.

The routing context: behind the gateway's local runtime a handler runs
inside the SDK's routing scope (`coalmine.sdk.current_token`); behind a
Lambda target (the local Lambda endpoint) it arrives in the event's
``baggage`` header. `Order.of` takes it from either, and every hop the
function makes (the kitchen over HTTP, ``order_placed`` on the stream)
carries it on, so the whole chain runs the user's channel.
"""

from __future__ import annotations

import base64
import json
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from coalmine.core.ports import Stream
from coalmine.sdk.carriers import extract_http, inject_http
from coalmine.sdk.publish import publish
from coalmine.sdk.scope import current_token

__all__ = ["TOPIC", "USER_HEADER", "BadOrder", "Order", "configure", "consumer", "reply", "work"]

TOPIC = "order_placed"
USER_HEADER = "x-user-id"
"""the header the gateway identifies the user by"""


@dataclass
class _Wiring:
    stream: Stream | None = None
    gateway_url: str | None = None
    http: httpx.Client | None = None


_wiring = _Wiring()
_lock = threading.Lock()


def configure(stream: Stream | None, gateway_url: str | None) -> None:
    """Point the functions at ``stream`` and the gateway at ``gateway_url`` (None: unset)."""
    with _lock:
        if _wiring.http is not None:
            _wiring.http.close()
        _wiring.stream = stream
        _wiring.gateway_url = gateway_url.rstrip("/") if gateway_url else None
        _wiring.http = httpx.Client(timeout=10) if gateway_url else None


def work(median_ms: float, sigma: float = 0.3) -> None:
    """Spend a lognormal time around ``median_ms`` (the function's own work)."""
    time.sleep(median_ms * math.exp(sigma * random.gauss(0.0, 1.0)) / 1000.0)


def reply(status: int, body: Mapping[str, Any]) -> dict[str, Any]:
    """A Lambda proxy integration answer with a JSON body."""
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body),
    }


def _is_http(event: Mapping[str, Any]) -> bool:
    return event.get("version") == "2.0" and "requestContext" in event


def consumer(
    handle: Callable[[Mapping[str, Any]], dict[str, Any]],
) -> Callable[..., dict[str, Any]]:
    """A consumer's handler: called with an ``order_placed`` payload (from the stream, by
    `coalmine.sdk.dispatch`) it returns ``handle``'s result; called through the gateway with
    the payload as a JSON request body it answers 200 with that result, 400 for a body that
    is not a JSON object (a missing field still fails, as it does on the stream)."""

    def handler(event: dict[str, Any], context: object = None) -> dict[str, Any]:
        if not _is_http(event):
            return handle(event)
        raw = event.get("body") or ""
        if event.get("isBase64Encoded"):
            raw = base64.b64decode(raw).decode("utf-8")
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return reply(400, {"error": "the body must be an order_placed event (a JSON object)"})
        return reply(200, handle(payload))

    return handler


class BadOrder(ValueError):
    """The request is not an order: answered 400."""


@dataclass(frozen=True)
class Order:
    """An order as ``place-order`` receives it through the gateway."""

    user: str
    order: Mapping[str, Any]
    token: str | None
    """the signed routing context to carry on (None: none was given)"""

    @classmethod
    def of(cls, event: Mapping[str, Any]) -> Order:
        """Read an API Gateway HTTP API (payload 2.0) event; raise `BadOrder`."""
        headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
        user = headers.get(USER_HEADER, "")
        if not user:
            raise BadOrder(f"say who orders in the {USER_HEADER} header")
        raw = event.get("body") or ""
        if event.get("isBase64Encoded"):
            raw = base64.b64decode(raw).decode("utf-8")
        try:
            order = json.loads(raw)
        except ValueError:
            raise BadOrder(
                'the body must be a JSON order like {"id": "o-1", "items": [...]}'
            ) from None
        if not isinstance(order, dict) or not isinstance(order.get("id"), str) or not order["id"]:
            raise BadOrder("the order needs an 'id' (a non-empty string)")
        items = order.get("items", [])
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise BadOrder("'items' must be a list of strings")
        token = current_token() or extract_http(headers)
        return cls(user, order, token)

    def kitchen(self) -> dict[str, Any]:
        """Ask ``kitchen`` (through the gateway, with the routing context) to accept the order."""
        http, url = _wiring.http, _wiring.gateway_url
        if http is None or url is None:
            raise RuntimeError("the gateway is not configured: call app.configure first")
        headers = inject_http({USER_HEADER: self.user}, self.token)
        r = http.post(f"{url}/kitchen/", json=dict(self.order), headers=headers)
        r.raise_for_status()
        ticket: dict[str, Any] = r.json()
        return ticket

    def publish(self, event: Mapping[str, Any]) -> None:
        """Publish ``event`` to `TOPIC` with the routing context, keyed by the user."""
        stream = _wiring.stream
        if stream is None:
            raise RuntimeError("the stream is not configured: call app.configure first")
        publish(stream, TOPIC, dict(event), key=self.user, token=self.token)
