"""`BodyLimit`: the control plane reads no request body larger than its limit.

A plain ASGI middleware, outside routing: it acts before authentication and
before any parsing, on every route. A body whose ``Content-Length`` is over
the limit is answered 413 before a byte of it is read; a body streamed
without one (chunked) is counted as the application reads it and cut with a
413 once it passes the limit. So an unauthenticated client cannot make the
server hold more than the limit per request (the issue's 300 MB POST took
the server to 1.08 GB before it answered 401).

The limit is ``create_app(max_body_bytes=...)``, else the environment
variable ``COALMINE_MAX_BODY_BYTES``, else `DEFAULT_MAX_BODY_BYTES` (4 MiB:
a flusher's largest batch of metric windows fits, see docs/metrics.md).
Routes keep their own lower limits (apply documents, alarm bodies).
"""

from __future__ import annotations

import json
import os

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DEFAULT_MAX_BODY_BYTES", "ENV", "BodyLimit", "max_body_bytes"]

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
ENV = "COALMINE_MAX_BODY_BYTES"


def max_body_bytes(given: int | None = None) -> int:
    """The limit: ``given``, else ``COALMINE_MAX_BODY_BYTES``, else the default."""
    raw: int | str | None = given if given is not None else os.environ.get(ENV)
    if raw is None:
        return DEFAULT_MAX_BODY_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if isinstance(raw, bool) or value < 1:
        raise ValueError(f"{ENV} must be a whole number of bytes of at least 1, got {raw!r}")
    return value


class _TooLarge(HTTPException):
    """Raised from ``receive``: FastAPI passes an HTTPException through its body parsing, and
    its exception handler answers it; outside FastAPI, `BodyLimit` answers it."""


class BodyLimit:
    """Answer 413 to a request whose body is larger than ``max_bytes``, reading no more of it."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.detail = (
            f"the request body is larger than {max_bytes} bytes, the most this control plane"
            f" takes ({ENV})"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        started = False

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(413, self.detail)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracked)
        except _TooLarge:
            if started:
                raise
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": self.detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length itself
    return None
