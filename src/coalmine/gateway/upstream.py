"""The HTTP upstream client: forward one call to a version's URL, streaming both ways.

aiohttp rather than httpx: for a proxy's many small exchanges an httpx
client measured about 8x slower than an aiohttp session in the design issue.
One `aiohttp.ClientSession` per process keeps a bounded connection pool; the
request body is streamed to the upstream as it arrives and the response body
back as it comes (nothing is buffered whole). Responses are passed through as
they are: no redirects followed, no decompression, no cookie jar, hop-by-hop
headers dropped.

A failure before the response has started becomes `CallFailed` (502, or 504
on a timeout) for the app to answer; a failure after it has started can only
cut the connection short, which is what happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from coalmine.gateway.asgi import HOP_BY_HOP, CallFailed, RawHeaders, Receive, Send

__all__ = ["Call", "HttpUpstream", "target_url"]

log = logging.getLogger(__name__)

_SKIP_AUTO = frozenset({"Accept", "Accept-Encoding", "User-Agent", "Content-Type"})
_NOT_PASSED_BACK = HOP_BY_HOP | {
    b"date",
    b"server",
    b"x-coalmine-version",
    b"x-coalmine-channel",
    b"x-coalmine-release",
}
"""uvicorn sets date and server itself; the coalmine headers are the gateway's to set"""
_CONNECT_TIMEOUT: type[Exception] | None = getattr(aiohttp, "ConnectionTimeoutError", None)
"""aiohttp 3.10+ tells a connect timeout from a read timeout"""


@dataclass(frozen=True, slots=True)
class Call:
    """One request for a function's version, as the gateway forwards it."""

    function: str
    version: str
    method: str
    path: str
    """the request's full (decoded) path, e.g. ``/place-order/items/1``"""
    raw_rest: bytes
    """the still-encoded path after ``/{function}``: ``b""`` or starting with ``/``"""
    query: bytes
    headers: RawHeaders
    """the headers to send downstream (already rewritten by the gateway)"""
    receive: Receive
    has_body: bool


class ClientGone(Exception):
    """The client disconnected while its request body was being forwarded."""


def target_url(target: str, raw_rest: bytes, query: bytes) -> str:
    """The target URL with the request's path rest and query string appended."""
    base, _, target_query = target.partition("?")
    rest = raw_rest.decode("latin-1")
    if rest:
        base = base.rstrip("/") + rest
    q = "&".join(p for p in (target_query, query.decode("latin-1")) if p)
    return f"{base}?{q}" if q else base


async def _request_body(receive: Receive, done: asyncio.Event) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            done.set()
            return


async def _disconnected(receive: Receive, body_done: asyncio.Event, has_body: bool) -> None:
    if has_body:
        await body_done.wait()
    while (await receive())["type"] != "http.disconnect":
        pass


class HttpUpstream:
    """A pooled aiohttp client that forwards calls to HTTP targets."""

    def __init__(
        self, *, pool_size: int = 100, timeout: float = 30.0, connect_timeout: float = 5.0
    ) -> None:
        self.pool_size = pool_size
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> aiohttp.ClientSession:
        """Open the session (in the running loop); idempotent."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.pool_size, limit_per_host=0),
                timeout=aiohttp.ClientTimeout(total=self.timeout, connect=self.connect_timeout),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=False,
                skip_auto_headers=_SKIP_AUTO,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _reason(self, exc: BaseException) -> tuple[int, str]:
        if _CONNECT_TIMEOUT is not None and isinstance(exc, _CONNECT_TIMEOUT):
            return 504, f"no connection within {self.connect_timeout:g}s"
        if isinstance(exc, asyncio.TimeoutError):
            return 504, f"no response within {self.timeout:g}s"
        text = str(exc) or type(exc).__name__
        return 502, text

    async def forward(
        self, target: str, call: Call, send: Send, response_headers: Iterable[tuple[bytes, bytes]]
    ) -> None:
        """Forward ``call`` to ``target``; stream the response to ``send``.

        Raises `CallFailed` when no response could be started.
        """
        session = await self.start()
        url = target_url(target, call.raw_rest, call.query)
        headers: CIMultiDict[str] = CIMultiDict(
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in call.headers
        )
        body_done = asyncio.Event()
        data = _request_body(call.receive, body_done) if call.has_body else None
        started = False
        try:
            async with session.request(
                call.method,
                URL(url, encoded=True),
                headers=headers,
                data=data,
                allow_redirects=False,
            ) as resp:
                connection = {
                    t.strip().lower().encode("latin-1")
                    for t in resp.headers.get("Connection", "").split(",")
                }
                passed = [
                    (k.lower(), v)
                    for k, v in resp.raw_headers
                    if k.lower() not in _NOT_PASSED_BACK and k.lower() not in connection
                ]
                await send(
                    {
                        "type": "http.response.start",
                        "status": resp.status,
                        "headers": [*passed, *response_headers],
                    }
                )
                started = True
                await self._stream(resp, send, call, body_done)
        except ClientGone:
            log.info("client went away during the request body to %s", url)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            status, reason = self._reason(exc)
            if started:
                log.warning(
                    "upstream %s for %s %s failed mid-response: %s",
                    target,
                    call.function,
                    call.version,
                    reason,
                )
                return
            raise CallFailed(
                status, f"upstream {target} for {call.function} {call.version} failed: {reason}"
            ) from exc

    async def _stream(
        self, resp: aiohttp.ClientResponse, send: Send, call: Call, body_done: asyncio.Event
    ) -> None:
        pump = asyncio.ensure_future(self._pump(resp, send))
        watch = asyncio.ensure_future(_disconnected(call.receive, body_done, call.has_body))
        try:
            await asyncio.wait((pump, watch), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watch, pump):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if watch.done() and not watch.cancelled():
            watch.exception()  # retrieved, so asyncio does not report it
        if pump.cancelled():  # the client went away: the upstream is no longer read
            log.info("client went away during the response of %s", call.path)
            return
        pump.result()

    @staticmethod
    async def _pump(resp: aiohttp.ClientResponse, send: Send) -> None:
        async for chunk in resp.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
