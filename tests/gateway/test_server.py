"""The gateway's uvicorn protocol: one loop step's writes leave as one, nothing is held longer.

A raw ASGI app runs under uvicorn with `GatewayHttpProtocol`; a plain socket
is the client, so what arrives in one ``recv`` is what one write sent.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from coalmine.gateway.server import PROTOCOL, uvicorn_options
from tests.gateway.fixtures.harness import serve_asgi

WAIT = 5.0

Scope = dict[str, Any]
Message = dict[str, Any]


class App:
    """``/small``: a head and a 5-byte body; ``/stream``: a chunk, then one more when let go."""

    def __init__(self) -> None:
        self.let_go = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/small":
            headers = [(b"content-length", b"5")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"hello"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await asyncio.wait_for(self.let_go.wait(), WAIT)
        await send({"type": "http.response.body", "body": b"last", "more_body": False})


@asynccontextmanager
async def client(url: str) -> AsyncIterator[socket.socket]:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=WAIT)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


async def recv(sock: socket.socket) -> bytes:
    return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 65536), WAIT)


async def test_a_small_answer_arrives_in_one_piece() -> None:
    async with serve_asgi(App(), http=PROTOCOL) as url, client(url) as sock:
        loop = asyncio.get_running_loop()
        for _ in range(3):  # on one keep-alive connection
            await loop.sock_sendall(sock, b"GET /small HTTP/1.1\r\nhost: x\r\n\r\n")
            data = await recv(sock)
            assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data
            assert data.endswith(b"\r\n\r\nhello"), data


async def test_a_streamed_chunk_is_not_held_for_the_next() -> None:
    app = App()
    async with serve_asgi(app, http=PROTOCOL) as url, client(url) as sock:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        data = b""
        while not data.endswith(b"5\r\nfirst\r\n"):  # the head and the first chunk
            data += await recv(sock)
        assert not app.let_go.is_set()
        app.let_go.set()
        while not data.endswith(b"0\r\n\r\n"):
            data += await recv(sock)
        assert b"4\r\nlast\r\n" in data


async def test_what_was_written_before_a_close_is_sent() -> None:
    async with serve_asgi(App(), http=PROTOCOL) as url, client(url) as sock:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(
            sock, b"GET /small HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        data = b""
        while chunk := await recv(sock):  # uvicorn closes after the answer
            data += chunk
        assert data.endswith(b"\r\n\r\nhello")
        assert b"connection: close" in data.lower()


def test_the_gateway_runs_with_this_protocol() -> None:
    options = uvicorn_options()
    assert options["http"] == PROTOCOL
    assert options["proxy_headers"] is False  # the gateway appends the peer itself
