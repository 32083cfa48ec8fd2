"""`HttpTarget`: the `FunctionTarget` of HTTP versions, forwarding a call to its URL, streaming both ways.

A small HTTP/1.1 client on asyncio's protocol API and httptools' response
parser (the llhttp parser uvicorn uses for requests), not a general-purpose
client: a proxy's exchanges are many and small, and what a general client does
per request (building request and response objects, a task per stream, cookie
and redirect machinery) was most of the gateway's cost (aiohttp's and httpx's
clients were both measured: docs/benchmarks.md, "How the gateway got there").

What it does: one keep-alive connection pool per `HttpTarget`, at most
``pool_size`` connections open across upstreams (a call waits for one), each
kept idle for at most ``idle_timeout`` seconds. The request body is streamed
to the upstream as it arrives (chunked when the client sent no length) and
the response back as it comes, with back-pressure both ways (reading from the upstream pauses while
more than 256 KiB wait for the client). A response that has arrived whole by
the time its head is read (the usual small answer) goes to the client in one
message. Responses are passed through as they are: no redirects followed, no
decompression, no cookies, hop-by-hop headers dropped.

A call that fails on a reused keep-alive connection before any byte of the
answer came back is retried once on a new connection when it has no body and
an idempotent method (the upstream closed the idle connection as the request
was sent: an HTTP/1.1 race every pooling client has to absorb). An answer
that comes back before the whole request body was sent (a 413, say) is passed
on even when the upstream then closes the connection. ``timeout`` bounds the
whole call, a client that stalls while sending its body included.

`HttpTarget.post` is the same pool's other use: a request the gateway makes
itself (the Lambda target's Invoke), whose body it already holds, sent in
one write and answered whole.

A failure before the response has started becomes `CallFailed` (502, or 504
on a timeout) for the app to answer; a failure after it has started can only
cut the connection short, which is what happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import cast
from urllib.parse import quote, urlsplit

import httptools

from coalmine.core.ports import Call
from coalmine.gateway.asgi import HOP_BY_HOP, CallFailed, RawHeaders, Receive, Send

__all__ = ["Call", "HttpTarget", "HttpUpstream", "Origin"]

log = logging.getLogger(__name__)

_NOT_PASSED_BACK = HOP_BY_HOP | {
    b"date",
    b"server",
    b"x-coalmine-version",
    b"x-coalmine-channel",
    b"x-coalmine-release",
}
"""uvicorn sets date and server itself; the coalmine headers are the gateway's to set"""
_HIGH_WATER = 256 * 1024
"""bytes of response body buffered for a slow client before the upstream is paused"""
_URL_SAFE = "/%:@!$&'()*+,;=-._~?"
"""what `quote` keeps of a target's path and query: RFC 3986 characters, escapes kept"""
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
"""RFC 9110 9.2.2: the methods a client may send again after a lost connection"""
CLIENT_GONE = 499
"""the status a call is counted by when the client left before its answer (nginx's 499)"""
DEFAULT_IDLE_TIMEOUT = 4.0
"""seconds an idle pooled connection is kept: under uvicorn's 5 s keep-alive
default, so the gateway seldom picks a connection the upstream is closing"""


class ClientGone(Exception):
    """The client disconnected while its request body was being forwarded."""


class UpstreamFailed(Exception):
    """The upstream connection broke, or answered something that is not HTTP/1.1."""


@dataclass(frozen=True, slots=True)
class Origin:
    """A target URL taken apart once: where to connect, and the path to call."""

    scheme: str
    host: str
    port: int
    host_header: bytes
    path: str
    """the target's path, ``/`` when it has none"""
    query: str

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    @classmethod
    def parse(cls, target: str) -> Origin:
        """Raises `ValueError` saying what is wrong with ``target``."""
        parts = urlsplit(target)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"{target!r} is not an http:// or https:// URL")
        if not parts.hostname:
            raise ValueError(f"{target!r} has no host")
        port = parts.port or (443 if scheme == "https" else 80)
        netloc = parts.netloc.rpartition("@")[2]
        # a registered URL may hold characters a request line cannot: encode them once here
        path = quote(parts.path or "/", safe=_URL_SAFE)
        return cls(
            scheme,
            parts.hostname,
            port,
            netloc.encode("idna"),
            path,
            quote(parts.query, safe=_URL_SAFE),
        )

    def request_target(self, raw_rest: bytes, query: bytes) -> bytes:
        """The request line's target: the path with the rest appended, and both queries."""
        path = self.path
        if raw_rest:
            path = path.rstrip("/") + raw_rest.decode("latin-1")
        q = "&".join(p for p in (self.query, query.decode("latin-1")) if p)
        return (f"{path}?{q}" if q else path).encode("latin-1")


class _Connection(asyncio.Protocol):
    """One keep-alive connection to an upstream, reading one response at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, key: tuple[str, str, int]) -> None:
        self.loop = loop
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self._drain: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._head: asyncio.Future[tuple[int, RawHeaders]] | None = None
        self._begin_exchange(head_request=False)
        self._head = None  # no exchange yet

    def _begin_exchange(self, *, head_request: bool) -> asyncio.Future[tuple[int, RawHeaders]]:
        answer: asyncio.Future[tuple[int, RawHeaders]] = self.loop.create_future()
        self._head = answer
        self._head_request = head_request
        self.status = 0
        self.headers: RawHeaders = []
        self._chunks: list[bytes] = []
        self._buffered = 0
        self.complete = False
        self.got_bytes = False
        self._framed = False
        self._keep_alive = False
        self._extra = False
        self._failure: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        return answer

    # -- asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._head is None:  # nothing was asked: an idle connection must stay quiet
            self.close()
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail(UpstreamFailed("the upstream switched protocols, which is not proxied"))
        except httptools.HttpParserError as exc:
            self.fail(UpstreamFailed(f"malformed response: {exc}"))
        if self._buffered > _HIGH_WATER and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._head is not None and not self.complete:
            if self._head.done() and not self._framed and self._failure is None:
                self.complete = True  # a body delimited by the end of the connection
            else:
                reason = f": {exc}" if exc is not None else ""
                self.fail(UpstreamFailed(f"the upstream closed the connection{reason}"))
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(UpstreamFailed("the upstream closed the connection"))

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- httptools callbacks -------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if self.complete:  # a second answer to one request: the connection is out of step
            self._extra = True
            return
        status = self.parser.get_status_code()
        if status < 200:  # 1xx informational: the real answer follows
            self.headers = []
            return
        self.status = status
        # llhttp forgets this once the message is complete
        self._keep_alive = self.parser.should_keep_alive()
        for name, value in self.headers:
            if name == b"content-length" or (
                name == b"transfer-encoding" and value.lower().endswith(b"chunked")
            ):
                self._framed = True
        if self._head_request:
            # llhttp cannot be told a HEAD answer has no body: this exchange ends
            # here, and `park` gives the connection a fresh parser
            self.complete = True
        if self._head is not None and not self._head.done():
            self._head.set_result((status, self.headers))

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self._chunks.append(body)
            self._buffered += len(body)

    def on_message_complete(self) -> None:
        if self.status:  # not a 1xx
            self.complete = True

    # -- the exchange ----------------------------------------------------------

    def begin(self, head: bytes, *, head_request: bool) -> asyncio.Future[tuple[int, RawHeaders]]:
        """Send a request's head; the future gets the response's status and headers."""
        answer = self._begin_exchange(head_request=head_request)
        assert self.transport is not None
        self.transport.write(head)
        return answer

    async def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise self._failure or UpstreamFailed("the upstream closed the connection")
        self.transport.write(data)
        if self._drain is not None and not self._drain.done():
            await self._drain

    def answered(self) -> tuple[int, RawHeaders] | None:
        """The response head when it has arrived (say, a 413 sent before the body was read)."""
        head = self._head
        if head is None or not head.done() or head.cancelled() or head.exception() is not None:
            return None
        return head.result()

    def take_whole_body(self) -> bytes | None:
        """The whole body when the response has arrived entirely, else None."""
        if not self.complete:
            return None
        body = b"".join(self._chunks)
        self._chunks = []
        return body

    async def next_body(self) -> bytes | None:
        """The body bytes that have arrived since the last call; None at the end."""
        while True:
            if self._chunks:
                data = b"".join(self._chunks)
                self._chunks, self._buffered = [], 0
                if self._reading_paused and self.transport is not None:
                    self._reading_paused = False
                    self.transport.resume_reading()
                return data
            if self.complete:
                return None
            if self._failure is not None:
                raise self._failure
            self._waiter = self.loop.create_future()
            await self._waiter

    def fail(self, exc: BaseException) -> None:
        """End the exchange with ``exc`` and drop the connection."""
        if self._failure is None:
            self._failure = exc
        if self._head is not None and not self._head.done():
            self._head.set_exception(exc)
            self._head.exception()  # so asyncio does not log it when the call ended elsewhere
        self._wake()
        self.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def reusable(self) -> bool:
        return (
            self.complete
            and not self.closed
            and self._failure is None
            and self._keep_alive
            and not self._extra
        )

    def park(self) -> None:
        """Between exchanges: any byte the upstream sends now closes the connection."""
        if self._reading_paused and self.transport is not None:
            # a large answer that arrived whole paused reading; the next one must be read
            self._reading_paused = False
            self.transport.resume_reading()
        if self._head_request:  # its parser still waits for the body a HEAD answer lacks
            self.parser = httptools.HttpResponseParser(self)
        self._head = None
        self.reused = False
        self.idle_since = time.monotonic()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class HttpTarget:
    """The `FunctionTarget` of HTTP versions: a pooled HTTP/1.1 client that forwards calls."""

    def __init__(
        self,
        *,
        pool_size: int = 100,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        self.pool_size = pool_size
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._origins: dict[str, Origin] = {}
        self._started = False
        self._in_flight = 0
        """calls holding one of the ``pool_size`` slots"""
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._tls: ssl.SSLContext | None = None

    async def start(self) -> None:
        """Make the pool ready (in the running loop); idempotent."""
        self._started = True

    async def close(self) -> None:
        """Close the idle connections; calls in flight close theirs when done."""
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        self._started = False

    @property
    def idle_connections(self) -> int:
        """How many pooled connections wait for a call (for tests and diagnostics)."""
        return sum(len(idle) for idle in self._idle.values())

    def origin(self, target: str) -> Origin:
        """``target`` taken apart (cached); `CallFailed` 502 when it is not a usable URL."""
        origin = self._origins.get(target)
        if origin is None:
            try:
                origin = Origin.parse(target)
            except ValueError as exc:
                raise CallFailed(502, f"unusable upstream URL: {exc}") from None
            if len(self._origins) > 4096:  # targets come from snapshots; old ones go
                self._origins.clear()
            self._origins[target] = origin
        return origin

    async def _take_slot(self, deadline: float) -> None:
        """Wait for one of the ``pool_size`` slots (first come, first served) until ``deadline``.

        Not an `asyncio.Semaphore`, whose acquire and release cost more than this
        counter (docs/benchmarks.md); a counter until the pool is full.
        """
        if self._in_flight < self.pool_size and not self._waiting:
            self._in_flight += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter  # `_give_slot` hands its slot over: the count stays
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._give_slot()  # handed a slot this call will not use
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(waiter)
            raise

    def _give_slot(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._in_flight -= 1

    async def _connect(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        if origin.scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, origin.key),
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
        except TimeoutError:
            raise CallFailed(504, f"no connection within {self.connect_timeout:g}s") from None
        except OSError as exc:
            raise CallFailed(502, f"cannot connect: {exc}") from None
        return conn

    async def _acquire(self, origin: Origin, *, fresh: bool) -> _Connection:
        idle = self._idle.get(origin.key)
        if idle and not fresh:
            now = time.monotonic()
            while idle:
                conn = idle.pop()
                if not conn.closed and now - conn.idle_since < self.idle_timeout:
                    conn.reused = True
                    return conn
                conn.close()
        # open = calls in flight (this one included) + idle: room for one more?
        if self._in_flight + self.idle_connections > self.pool_size:
            self._evict_oldest_idle()
        return await self._connect(origin)

    def _evict_oldest_idle(self) -> None:
        """Close the longest-idle pooled connection (of another upstream: this one has none)."""
        lists = [idle for idle in self._idle.values() if idle]
        if lists:
            min(lists, key=lambda idle: idle[0].idle_since).pop(0).close()

    def _release(self, conn: _Connection) -> None:
        if not conn.reusable or not self._started:
            conn.close()
            return
        idle = self._idle.setdefault(conn.key, [])
        conn.park()
        idle.append(conn)

    async def invoke(self, call: Call, send: Send) -> int:
        """Forward ``call`` to its URL, ``call.target``; stream the response to ``send``.

        Returns the status to count the call by: the upstream's, 502 when the
        response was cut short, 499 when the client went away while sending
        its body. Raises `CallFailed` when no response could be started.
        """
        if not self._started:
            await self.start()
        target = call.target
        try:
            origin = self.origin(target)
        except CallFailed as exc:
            raise CallFailed(
                exc.status, f"upstream {target} for {call.function} {call.version}: {exc.detail}"
            ) from None
        head, chunked = _request_head(origin, call)
        loop = asyncio.get_running_loop()
        holder: list[_Connection] = []
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            if holder:
                holder[-1].fail(TimeoutError())

        deadline = loop.call_later(self.timeout, expire)
        deadline_at = loop.time() + self.timeout
        started = False
        try:
            await self._take_slot(deadline_at)  # (pool_size bounds the connections)
        except TimeoutError:
            deadline.cancel()
            raise CallFailed(
                504,
                f"upstream {target} for {call.function} {call.version} failed: no connection"
                f" of the pool ({self.pool_size}) came free within {self.timeout:g}s",
            ) from None
        except BaseException:
            deadline.cancel()
            raise
        try:
            for attempt in (0, 1):
                conn = await self._acquire(origin, fresh=attempt > 0)
                holder.append(conn)
                if expired:
                    raise TimeoutError
                answer = conn.begin(head, head_request=call.method == "HEAD")
                try:
                    if call.has_body:
                        # the deadline must also end a client that stalls mid-body
                        async with asyncio.timeout_at(deadline_at):
                            await _send_body(conn, call.receive, chunked=chunked)
                    status, raw = await answer
                    break
                except UpstreamFailed:
                    early = conn.answered()
                    if early is not None:  # say, a 413 sent before the whole body was read
                        status, raw = early
                        break
                    # a keep-alive connection closed by the upstream as we reused it
                    retry = (
                        conn.reused
                        and not conn.got_bytes
                        and not call.has_body
                        and call.method in _IDEMPOTENT
                    )
                    if attempt == 0 and retry and not expired:
                        continue
                    raise
            else:  # pragma: no cover - the loop always breaks or raises
                raise AssertionError
            named = _connection_named(raw)
            passed = [(k, v) for k, v in raw if k not in _NOT_PASSED_BACK and k not in named]
            passed.extend(call.response_headers)
            await send({"type": "http.response.start", "status": status, "headers": passed})
            started = True
            body = conn.take_whole_body()
            if body is not None:
                await send({"type": "http.response.body", "body": body})
            elif not await _stream(conn, send, call):
                return CLIENT_GONE
            return status
        except ClientGone:
            log.info("client went away during the request body to %s", target)
            return CLIENT_GONE
        except (TimeoutError, UpstreamFailed) as exc:
            if isinstance(exc, TimeoutError) or expired:
                status, reason = 504, f"no response within {self.timeout:g}s"
            else:
                status, reason = 502, str(exc)
            if started:
                log.warning(
                    "upstream %s for %s %s failed mid-response: %s",
                    target,
                    call.function,
                    call.version,
                    reason,
                )
                return 502
            raise CallFailed(
                status, f"upstream {target} for {call.function} {call.version} failed: {reason}"
            ) from None
        except CallFailed as exc:  # no connection
            raise CallFailed(
                exc.status,
                f"upstream {target} for {call.function} {call.version} failed: {exc.detail}",
            ) from None
        finally:
            deadline.cancel()
            if holder:
                self._release(holder[-1])
            self._give_slot()

    async def post(
        self, url: str, headers: RawHeaders, body: bytes
    ) -> tuple[int, RawHeaders, bytes]:
        """POST a whole ``body`` to ``url`` over the pool; the whole answer.

        For a call the gateway makes itself (a Lambda Invoke): the request goes in
        one write (head and body: one segment, one wakeup of the server) and the
        answer is read whole, with no streaming machinery. ``headers`` must not
        hold ``host`` or ``content-length``; both are added. Not retried: a POST
        may have run. Raises `CallFailed`: 504 when ``timeout`` passes (a pool
        slot included), 502 when the connection fails or the answer is not HTTP.
        """
        if not self._started:
            await self.start()
        origin = self.origin(url)
        lines = [
            b"POST ",
            origin.request_target(b"", b""),
            b" HTTP/1.1\r\nhost: ",
            origin.host_header,
            b"\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\n",
        ]
        for name, value in headers:
            lines += (name, b": ", value, b"\r\n")
        lines += (b"\r\n", body)
        loop = asyncio.get_running_loop()
        deadline_at = loop.time() + self.timeout
        try:
            await self._take_slot(deadline_at)
        except TimeoutError:
            raise CallFailed(
                504, f"no connection of the pool ({self.pool_size}) came free in time"
            ) from None
        conn: _Connection | None = None
        try:
            async with asyncio.timeout_at(deadline_at):
                conn = await self._acquire(origin, fresh=False)
                answer = conn.begin(b"".join(lines), head_request=False)
                status, raw = await answer
                chunks = []
                while (data := await conn.next_body()) is not None:
                    chunks.append(data)
            return status, raw, b"".join(chunks)
        except TimeoutError:
            if conn is not None:
                conn.fail(TimeoutError())
            raise CallFailed(504, f"no response within {self.timeout:g}s") from None
        except UpstreamFailed as exc:
            raise CallFailed(502, str(exc)) from None
        finally:
            if conn is not None:
                self._release(conn)
            self._give_slot()


HttpUpstream = HttpTarget
"""`HttpTarget`'s name before the `FunctionTarget` port (kept for imports of it)"""


def _request_head(origin: Origin, call: Call) -> tuple[bytes, bool]:
    """The request line and headers for ``call``, and whether its body goes chunked."""
    lines = [
        call.method.encode("ascii"),
        b" ",
        origin.request_target(call.raw_rest, call.query),
        b" HTTP/1.1\r\nhost: ",
        origin.host_header,
        b"\r\n",
    ]
    has_length = False
    for name, value in call.headers:
        if name == b"content-length":
            has_length = True
        lines += (name, b": ", value, b"\r\n")
    chunked = call.has_body and not has_length
    if chunked:
        lines.append(b"transfer-encoding: chunked\r\n")
    lines.append(b"\r\n")
    return b"".join(lines), chunked


def _connection_named(raw: RawHeaders) -> frozenset[bytes]:
    """The headers a response's Connection header names (hop-by-hop too)."""
    named: set[bytes] = set()
    for name, value in raw:
        if name == b"connection":
            named.update(t.strip().lower() for t in value.split(b","))
    return frozenset(named)


async def _send_body(conn: _Connection, receive: Receive, *, chunked: bool) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            conn.abort()
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        if chunked:
            framed = b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunk else b""
            await conn.write(framed + (b"0\r\n\r\n" if not more else b""))
        elif chunk:
            await conn.write(chunk)
        if not more:
            return


async def _stream(conn: _Connection, send: Send, call: Call) -> bool:
    """Pass the response body on as it comes; False when the client went away first."""
    pump = asyncio.ensure_future(_pump(conn, send))
    watch = asyncio.ensure_future(_disconnected(call.receive))
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
        conn.abort()
        log.info("client went away during the response of %s", call.path)
        return False
    pump.result()
    return True


async def _pump(conn: _Connection, send: Send) -> None:
    while (chunk := await conn.next_body()) is not None:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
