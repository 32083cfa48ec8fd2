"""How the gateway runs under uvicorn: its HTTP protocol and its server options.

The protocol is uvicorn's httptools protocol with one change: what the app
writes to a connection during one step of the event loop leaves in one
write, when the step ends (a ``call_soon``). An ASGI app sends a response's
head and its body as two messages, which uvicorn writes as they come: two
system calls and two TCP segments for a small answer, and on loopback each
segment is delivered to the reader within the writer's system call; joining
them is measurably faster (docs/benchmarks.md, "How the gateway got there").
Nothing waits on a timer, and a streamed body still leaves chunk by chunk,
one write per loop step.

`uvicorn_options` are the settings `coalmine gateway` runs with (the bench
runs the same).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["PROTOCOL", "GatewayHttpProtocol", "uvicorn_options"]

PROTOCOL = "coalmine.gateway.server:GatewayHttpProtocol"
"""uvicorn's ``http`` setting for the gateway (a path, so that worker processes import it)"""


class _JoinedWrites:
    """A transport whose writes within one event-loop step go out as one write.

    Everything but writing, closing and the buffer size is the real transport's.
    """

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def _flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def writelines(self, lines: list[bytes]) -> None:
        for line in lines:
            self.write(line)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def close(self) -> None:
        self._flush()  # close() sends what was written before it
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, writing what one loop step produced at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        real = cast(asyncio.Transport, transport)
        super().connection_made(cast(asyncio.Transport, _JoinedWrites(real, self.loop)))


def uvicorn_options() -> dict[str, Any]:
    """The uvicorn settings of a gateway process (host, port and workers apart)."""
    return {
        "http": PROTOCOL,
        "access_log": False,
        "lifespan": "on",
        "ws": "none",
        # the gateway appends the peer to X-Forwarded-For itself: uvicorn must not
        # replace the peer with the header's value first
        "proxy_headers": False,
    }
