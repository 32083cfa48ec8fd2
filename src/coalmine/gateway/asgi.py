"""ASGI plumbing shared by the gateway's modules: types, whole replies, JSON replies.

Kept apart so that the app and the targets (`coalmine.gateway.upstream`,
`coalmine.gateway.runtime`, `coalmine.gateway.mock`) speak one vocabulary
without importing each other. The `Call` a target is given, the message
types and `CallFailed` are those of the `FunctionTarget` port
(`coalmine.core.ports`), re-exported here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from coalmine.core.ports import Call, CallFailed, Message, RawHeaders, Receive, Send

__all__ = [
    "HOP_BY_HOP",
    "Call",
    "CallFailed",
    "Message",
    "RawHeaders",
    "Receive",
    "Reply",
    "Scope",
    "Send",
    "json_body",
    "read_body",
    "send_json",
]

Scope = MutableMapping[str, Any]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
"""RFC 9110 section 7.6.1: headers of one connection, never forwarded"""


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole answer (a local handler's, a mock's): status, headers and body."""

    status: int
    headers: RawHeaders
    body: bytes

    def start(self, extra: Iterable[tuple[bytes, bytes]]) -> Message:
        """The ``http.response.start`` message of this reply, its length and ``extra`` appended."""
        length = (b"content-length", str(len(self.body)).encode())
        return {
            "type": "http.response.start",
            "status": self.status,
            "headers": [*self.headers, length, *extra],
        }


async def read_body(call: Call, max_body: int, limit: str) -> bytes:
    """The whole request body of ``call``, for a target that sends it in one piece.

    `CallFailed` 400 when the client disconnects before its body ended, 413
    past ``max_body`` bytes (``limit`` names whose limit that is).
    """
    if not call.has_body:
        return b""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await call.receive()
        if message["type"] == "http.disconnect":
            raise CallFailed(400, "the client disconnected before its request body ended")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body:
            raise CallFailed(413, f"request body over {max_body} bytes, {limit}")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def json_body(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


async def send_json(
    send: Send, status: int, data: object, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    body = json_body(data)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
