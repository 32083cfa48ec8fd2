"""The HTTP/1.1 client behind `HttpTarget.invoke`, against raw-byte servers.

Each test starts an `asyncio.start_server` on 127.0.0.1 whose handler reads the
client's requests as bytes and writes exactly the answer the test wants, so
the client's framing both ways, its keep-alive pool (connections counted by
the server), the stale keep-alive retry and its handling of odd or broken
answers are checked on the wire. The gateway-level tests (test_gateway.py)
cover large bodies, streaming, clients hanging up, refused connections and
timeouts; they are not repeated here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvloop

from coalmine.core.model import Channel, Decision, Reason
from coalmine.gateway import upstream as upstream_module
from coalmine.gateway.asgi import CallFailed, Message, Receive
from coalmine.gateway.upstream import Call, HttpTarget, Origin

WAIT = 5.0
"""seconds any awaited event may take (generous: the machine may be busy)"""
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


# -- the raw upstream ----------------------------------------------------------


@dataclass
class Request:
    """One request as the upstream read it off the wire."""

    line: str
    headers: list[tuple[str, str]]
    body: bytes
    """the body bytes as sent, chunk framing included"""

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None


@dataclass
class Upstream:
    """What the raw server saw: connections (accepted, open, most open at once) and requests."""

    port: int = 0
    accepted: int = 0
    open_now: int = 0
    max_open: int = 0
    requests: list[Request] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    """set whenever a connection's handler ends (the client hung up, or the handler closed)"""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Peer:
    """One accepted connection, as the test's handler sees it."""

    index: int
    """1 for the first connection accepted, 2 for the second, ..."""
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    upstream: Upstream

    async def read_request(self) -> Request | None:
        """The next request on this connection; None when the client closed it first."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return None
        line, *lines = head[:-4].decode("latin-1").split("\r\n")
        headers = [(k.strip().lower(), v.strip()) for k, _, v in (h.partition(":") for h in lines)]
        request = Request(line, headers, b"")
        if (length := request.header("content-length")) is not None:
            request.body = await self.reader.readexactly(int(length))
        elif request.header("transfer-encoding") == "chunked":
            request.body = await self._read_chunked()
        self.upstream.requests.append(request)
        return request

    async def _read_chunked(self) -> bytes:
        raw = b""
        while True:
            size_line = await self.reader.readuntil(b"\r\n")
            size = int(size_line.strip(), 16)
            data = await self.reader.readexactly(size + 2)
            raw += size_line + data
            if size == 0:
                return raw

    async def answer(self, *parts: bytes) -> None:
        """Write ``parts`` one after another, each flushed before the next."""
        for part in parts:
            self.writer.write(part)
            await self.writer.drain()

    async def serve(self, response: bytes = OK) -> None:
        """Answer every request on this connection with ``response`` until the client closes."""
        while await self.read_request() is not None:
            await self.answer(response)

    async def until_closed(self) -> None:
        """Wait for the client to close this connection."""
        await self.reader.read()


Handler = Callable[[Peer], Awaitable[None]]


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[Upstream]:
    """A raw HTTP server on a free 127.0.0.1 port running ``handler`` per connection."""
    upstream = Upstream()
    tasks: set[asyncio.Task[None]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        upstream.accepted += 1
        upstream.open_now += 1
        upstream.max_open = max(upstream.max_open, upstream.open_now)
        try:
            await handler(Peer(upstream.accepted, reader, writer, upstream))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client hung up, or the test is over
        finally:
            upstream.open_now -= 1
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            upstream.closed.set()
            tasks.discard(task)

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    try:
        yield upstream
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        for task in list(tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await server.wait_closed()


async def serve_all(peer: Peer) -> None:
    await peer.serve()


# -- calling it --------------------------------------------------------------


def receiving(*messages: Message, disconnect: bool = False) -> Receive:
    """An ASGI receive giving ``messages``, then a disconnect or (by default) nothing ever."""
    pending = list(messages)
    never = asyncio.Event()

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if disconnect:
            return {"type": "http.disconnect"}
        await never.wait()
        raise AssertionError("never set")

    return receive


def body_messages(*chunks: bytes) -> list[Message]:
    """``http.request`` messages for ``chunks``, ``more_body`` set on all but the last."""
    return [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]


DECISION = Decision("shop", "r1", Channel.STABLE, {"fn": "v1"}, Reason.COHORT)


def aimed(call: Call, target: str) -> Call:
    """``call`` sent to ``target``."""
    return dataclasses.replace(call, target=target)


def make_call(
    method: str = "GET",
    *,
    raw_rest: bytes = b"/x",
    query: bytes = b"",
    headers: Iterable[tuple[bytes, bytes]] = (),
    body: Iterable[bytes] | None = None,
) -> Call:
    chunks = list(body) if body is not None else None
    return Call(
        target="http://127.0.0.1:9/unset",
        decision=DECISION,
        function="fn",
        version="v1",
        method=method,
        path="/fn" + raw_rest.decode("latin-1"),
        raw_rest=raw_rest,
        query=query,
        headers=list(headers),
        receive=receiving(*body_messages(*chunks)) if chunks else receiving(),
        has_body=bool(chunks),
    )


class Sent:
    """An ASGI send keeping what it was given."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def starts(self) -> list[Message]:
        return [m for m in self.messages if m["type"] == "http.response.start"]

    @property
    def start(self) -> Message:
        assert len(self.starts) == 1, self.messages
        return self.starts[0]

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return list(self.start["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(
            m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"
        )

    @property
    def finished(self) -> bool:
        """Whether the last message ended the response body."""
        last = self.messages[-1] if self.messages else {}
        return last.get("type") == "http.response.body" and not last.get("more_body", False)


async def forward(
    client: HttpTarget,
    target: str,
    call: Call,
    response_headers: Iterable[tuple[bytes, bytes]] = (),
) -> tuple[int, Sent]:
    sent = Sent()
    call = dataclasses.replace(call, target=target, response_headers=list(response_headers))
    status = await asyncio.wait_for(client.invoke(call, sent), WAIT)
    return status, sent


@asynccontextmanager
async def pooled(**options: Any) -> AsyncIterator[HttpTarget]:
    """An `HttpTarget` (a 30 s timeout unless given), closed at the end."""
    options.setdefault("timeout", 30.0)
    upstream = HttpTarget(**options)
    try:
        yield upstream
    finally:
        await upstream.close()


@pytest.fixture
async def client() -> AsyncIterator[HttpTarget]:
    async with pooled() as upstream:
        yield upstream


class Held:
    """A handler that holds every answer (`OK`) until ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.requests = 0
        self._more = asyncio.Event()

    async def __call__(self, peer: Peer) -> None:
        while await peer.read_request() is not None:
            self.requests += 1
            self._more.set()
            await self.release.wait()
            await peer.answer(OK)

    async def arrived(self, n: int) -> None:
        """Wait until ``n`` requests are held (or were)."""
        while self.requests < n:
            self._more.clear()
            await asyncio.wait_for(self._more.wait(), WAIT)


# -- keep-alive --------------------------------------------------------------


async def keep_alive_reuse() -> None:
    """Three sequential GETs go over one connection, with the right request line and host."""
    async with pooled() as client, serving(serve_all) as upstream:
        target = f"{upstream.url}/api?stage=prod"
        rests = [(b"/x", b"a=1"), (b"/orders/7", b""), (b"", b"b=2&c=%20")]
        for rest, query in rests:
            call = make_call(raw_rest=rest, query=query, headers=[(b"x-request-id", b"r1")])
            status, sent = await forward(client, target, call)
            assert (status, sent.start["status"], sent.body) == (200, 200, b"ok")
            assert sent.finished
        assert upstream.accepted == 1
        assert client.idle_connections == 1
        seen = [(r.line, r.header("host"), r.header("x-request-id")) for r in upstream.requests]
        host = f"127.0.0.1:{upstream.port}"
        assert seen == [
            ("GET /api/x?stage=prod&a=1 HTTP/1.1", host, "r1"),
            ("GET /api/orders/7?stage=prod HTTP/1.1", host, "r1"),
            ("GET /api?stage=prod&b=2&c=%20 HTTP/1.1", host, "r1"),
        ]


async def test_sequential_calls_reuse_one_keep_alive_connection() -> None:
    await keep_alive_reuse()


def test_keep_alive_reuse_under_uvloop() -> None:
    """uvloop's transports are not `asyncio.Transport` subclasses; the client must not care."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)
        runner.run(keep_alive_reuse())


async def test_a_connection_close_or_http_1_0_answer_is_not_pooled(client: HttpTarget) -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
    ]

    async def handler(peer: Peer) -> None:
        await peer.serve(answers[peer.index - 1])

    async with serving(handler) as upstream:
        for _ in answers:
            status, sent = await forward(client, upstream.url, make_call())
            assert (status, sent.body) == (200, b"ok")
            assert client.idle_connections == 0
        assert upstream.accepted == 2


# -- request bodies ----------------------------------------------------------


async def echo(peer: Peer) -> None:
    while (request := await peer.read_request()) is not None:
        await peer.answer(
            b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(request.body), request.body)
        )


async def test_a_body_with_a_content_length_is_sent_as_is(client: HttpTarget) -> None:
    call = make_call(
        "POST",
        headers=[(b"content-type", b"text/plain"), (b"content-length", b"11")],
        body=[b"hello ", b"world"],
    )
    async with serving(echo) as upstream:
        status, sent = await forward(client, upstream.url, call)
        (request,) = upstream.requests
        assert request.line == "POST /x HTTP/1.1"
        assert request.header("content-length") == "11"
        assert request.header("transfer-encoding") is None
        assert request.body == b"hello world"
        assert (status, sent.body) == (200, b"hello world")
        # the framing was right: the connection goes on with the next call
        status, _ = await forward(client, upstream.url, make_call())
        assert (status, upstream.accepted) == (200, 1)


async def test_a_body_without_a_length_goes_chunked(client: HttpTarget) -> None:
    call = make_call(
        "PUT",
        headers=[(b"content-type", b"text/plain")],
        body=[b"hello ", b"", b"world"],  # an empty message must not end the body early
    )
    async with serving(echo) as upstream:
        status, sent = await forward(client, upstream.url, call)
        (request,) = upstream.requests
        assert request.line == "PUT /x HTTP/1.1"
        assert request.header("transfer-encoding") == "chunked"
        assert request.header("content-length") is None
        assert request.body == b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"
        assert (status, sent.body) == (200, request.body)  # echoed as read, framing and all
        status, _ = await forward(client, upstream.url, make_call())
        assert (status, upstream.accepted) == (200, 1)


# -- the stale keep-alive race ------------------------------------------------


def stale_after_first(peer: Peer) -> Awaitable[None]:
    """The first connection answers once, then drops the next request unanswered."""

    async def first() -> None:
        assert await peer.read_request() is not None
        await peer.answer(OK)
        await peer.read_request()  # ... and close without a word

    return first() if peer.index == 1 else peer.serve()


async def test_a_bodiless_call_is_retried_when_a_reused_connection_was_closed(
    client: HttpTarget,
) -> None:
    async with serving(stale_after_first) as upstream:
        assert (await forward(client, upstream.url, make_call()))[0] == 200
        status, sent = await forward(client, upstream.url, make_call(raw_rest=b"/again"))
        assert (status, sent.body) == (200, b"ok")
        assert upstream.accepted == 2
        assert [r.line for r in upstream.requests] == [
            "GET /x HTTP/1.1",
            "GET /again HTTP/1.1",
            "GET /again HTTP/1.1",
        ]
        assert client.idle_connections == 1


async def test_a_call_with_a_body_is_not_retried(client: HttpTarget) -> None:
    async with serving(stale_after_first) as upstream:
        assert (await forward(client, upstream.url, make_call()))[0] == 200
        post = make_call("POST", headers=[(b"content-length", b"4")], body=[b"data"])
        with pytest.raises(CallFailed) as failed:
            await forward(client, upstream.url, post)
        assert failed.value.status == 502
        assert "closed the connection" in failed.value.detail
        assert upstream.accepted == 1
        assert upstream.requests[-1].body == b"data"


async def test_a_bodiless_call_of_a_method_that_is_not_idempotent_is_not_retried(
    client: HttpTarget,
) -> None:
    async with serving(stale_after_first) as upstream:
        assert (await forward(client, upstream.url, make_call()))[0] == 200
        with pytest.raises(CallFailed) as failed:
            await forward(client, upstream.url, make_call("POST"))
        assert failed.value.status == 502
        assert upstream.accepted == 1
        assert [r.line for r in upstream.requests] == ["GET /x HTTP/1.1", "POST /x HTTP/1.1"]


async def test_an_answer_sent_before_the_whole_body_is_passed_on(client: HttpTarget) -> None:
    """The upstream refuses an upload at its head and closes: the client gets that 413."""
    too_large = (
        b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\nconnection: close\r\n\r\ntoo big\n"
    )
    answered = asyncio.Event()

    async def refuse(peer: Peer) -> None:
        await peer.reader.readuntil(b"\r\n\r\n")
        await peer.answer(too_large)
        answered.set()

    async with serving(refuse) as upstream:
        first_sent = asyncio.Event()
        chunks = iter(body_messages(b"a" * 1000, b"b" * 1000, b"c" * 1000))

        async def receive() -> Message:
            message = next(chunks)
            if message["body"].startswith(b"b"):  # the rest only once the upstream has refused
                await asyncio.wait_for(answered.wait(), WAIT)
                await asyncio.wait_for(upstream.closed.wait(), WAIT)
            first_sent.set()
            return message

        call = dataclasses.replace(
            make_call("POST", headers=[(b"content-length", b"3000")]),
            receive=receive,
            has_body=True,
        )
        status, sent = await forward(client, upstream.url, call)
        assert (status, sent.start["status"], sent.body) == (413, 413, b"too big\n")
        assert first_sent.is_set()
        assert client.idle_connections == 0


async def test_a_large_answer_that_arrived_whole_leaves_the_connection_readable(
    client: HttpTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over 256 KiB in before the client takes it pauses reading; the next call must not hang."""
    big = b"x" * (300 * 1024)
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(big), big)
    arrived = asyncio.Event()
    complete = upstream_module._Connection.on_message_complete

    def on_message_complete(conn: Any) -> None:
        complete(conn)
        arrived.set()

    monkeypatch.setattr(upstream_module._Connection, "on_message_complete", on_message_complete)

    async with serving(answering(answer)) as upstream:
        sent = Sent()

        async def slow_send(message: Message) -> None:
            await asyncio.wait_for(arrived.wait(), WAIT)  # the whole answer is in first
            await sent(message)

        status = await asyncio.wait_for(
            client.invoke(aimed(make_call(), upstream.url), slow_send), WAIT
        )
        assert (status, sent.body) == (200, big)
        status, again = await forward(client, upstream.url, make_call())
        assert (status, again.body) == (200, b"ok")
        assert upstream.accepted == 1


async def test_a_second_answer_to_one_request_keeps_the_connection_out_of_the_pool(
    client: HttpTarget,
) -> None:
    async with serving(answering(OK + OK, then="wait")) as upstream:
        status, sent = await forward(client, upstream.url, make_call())
        assert (status, sent.body) == (200, b"ok")
        assert client.idle_connections == 0
        assert (await forward(client, upstream.url, make_call()))[0] == 200
        assert upstream.accepted == 2


async def test_a_fresh_connection_closed_unanswered_is_not_retried(client: HttpTarget) -> None:
    async def hang_up(peer: Peer) -> None:
        await peer.read_request()

    async with serving(hang_up) as upstream:
        with pytest.raises(CallFailed) as failed:
            await forward(client, upstream.url, make_call())
        assert failed.value.status == 502
        assert upstream.accepted == 1


# -- responses -----------------------------------------------------------------


def answering(*parts: bytes, then: str = "serve") -> Handler:
    """A handler answering the first request with ``parts`` (each flushed), then:
    ``serve`` more with `OK`, ``close``, or ``wait`` for the client to close.
    Later connections are answered with `OK`."""

    async def handler(peer: Peer) -> None:
        if peer.index > 1:
            await peer.serve()
            return
        if await peer.read_request() is None:
            return
        await peer.answer(*parts)
        if then == "serve":
            await peer.serve()
        elif then == "wait":
            await peer.until_closed()

    return handler


async def test_a_chunked_response_arrives_whole_and_dechunked(client: HttpTarget) -> None:
    handler = answering(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n",
        b"6\r\nhello \r\n",
        b"5\r\nworld\r\n0\r\n\r\n",
    )
    async with serving(handler) as upstream:
        status, sent = await forward(client, upstream.url, make_call())
        assert (status, sent.body) == (200, b"hello world")
        assert sent.finished
        assert sent.headers == [(b"content-type", b"text/plain")]
        assert client.idle_connections == 1
        assert (await forward(client, upstream.url, make_call()))[1].body == b"ok"
        assert upstream.accepted == 1


async def test_a_body_ended_by_closing_arrives_whole_and_is_not_pooled(
    client: HttpTarget,
) -> None:
    handler = answering(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n",
        b"hello ",
        b"world",
        then="close",
    )
    async with serving(handler) as upstream:
        status, sent = await forward(client, upstream.url, make_call())
        assert (status, sent.body) == (200, b"hello world")
        assert sent.finished
        assert client.idle_connections == 0


async def test_a_head_answer_with_a_length_and_no_body_completes(client: HttpTarget) -> None:
    handler = answering(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n", then="serve")
    async with serving(handler) as upstream:
        status, sent = await forward(client, upstream.url, make_call("HEAD"))
        assert (status, sent.body) == (200, b"")
        assert sent.finished
        assert (b"content-length", b"10") in sent.headers
        assert client.idle_connections == 1
        # the pooled connection reads the next answer from its start
        status, sent = await forward(client, upstream.url, make_call())
        assert (status, sent.body) == (200, b"ok")
        assert upstream.accepted == 1


async def test_a_body_sent_after_a_head_answer_drops_the_pooled_connection(
    client: HttpTarget,
) -> None:
    """A HEAD answer's stray body reaches a parked connection: it is closed, not misread."""
    parked = asyncio.Event()

    async def wrong(peer: Peer) -> None:
        if peer.index > 1:
            await peer.serve()
            return
        assert await peer.read_request() is not None
        await peer.answer(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
        await asyncio.wait_for(parked.wait(), WAIT)
        await peer.answer(b"oops")
        await peer.until_closed()

    async with serving(wrong) as upstream:
        assert (await forward(client, upstream.url, make_call("HEAD")))[0] == 200
        assert client.idle_connections == 1
        upstream.closed.clear()
        parked.set()
        await asyncio.wait_for(upstream.closed.wait(), WAIT)  # the client hung up
        status, sent = await forward(client, upstream.url, make_call())
        assert (status, sent.body) == (200, b"ok")
        assert upstream.accepted == 2


async def test_an_informational_answer_is_skipped(client: HttpTarget) -> None:
    handler = answering(
        b"HTTP/1.1 103 Early Hints\r\nlink: </app.css>; rel=preload\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-real: 1\r\n\r\nfinal",
    )
    async with serving(handler) as upstream:
        status, sent = await forward(client, upstream.url, make_call())
        assert status == 200
        assert [m["status"] for m in sent.starts] == [200]
        assert sent.headers == [(b"content-length", b"5"), (b"x-real", b"1")]
        assert sent.body == b"final"
        assert (await forward(client, upstream.url, make_call()))[1].body == b"ok"
        assert upstream.accepted == 1


async def test_no_content(client: HttpTarget) -> None:
    handler = answering(b"HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n")
    async with serving(handler) as upstream:
        status, sent = await forward(client, upstream.url, make_call("DELETE"))
        assert (status, sent.start["status"], sent.body) == (204, 204, b"")
        assert sent.finished
        assert (await forward(client, upstream.url, make_call()))[1].body == b"ok"
        assert upstream.accepted == 1


async def test_hop_by_hop_and_connection_named_headers_are_dropped(client: HttpTarget) -> None:
    handler = answering(
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Length: 2\r\n"
        b"Connection: keep-alive, X-Secret\r\n"
        b"Keep-Alive: timeout=5\r\n"
        b"X-Secret: s3cr3t\r\n"
        b"Trailer: x-sum\r\n"
        b"Upgrade: h2c\r\n"
        b"Server: upstream\r\n"
        b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
        b"X-Coalmine-Version: forged\r\n"
        b"X-Kept: yes\r\n"
        b"\r\n"
        b"ok"
    )
    async with serving(handler) as upstream:
        extra = [(b"x-coalmine-version", b"v1"), (b"x-coalmine-channel", b"stable")]
        status, sent = await forward(client, upstream.url, make_call(), extra)
        assert (status, sent.body) == (200, b"ok")
        assert sent.headers == [(b"content-length", b"2"), (b"x-kept", b"yes"), *extra]


# -- broken answers ------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 abc\r\n\r\n",
        b"this is not http\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: ten\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
    ],
)
async def test_a_malformed_answer_fails_the_call(client: HttpTarget, answer: bytes) -> None:
    async with serving(answering(answer, then="wait")) as upstream:
        sent = Sent()
        with pytest.raises(CallFailed) as failed:
            await asyncio.wait_for(client.invoke(aimed(make_call(), upstream.url), sent), WAIT)
        assert failed.value.status == 502
        assert "malformed" in failed.value.detail
        assert sent.messages == []
        await asyncio.wait_for(upstream.closed.wait(), WAIT)  # the connection was dropped
        assert client.idle_connections == 0


async def test_an_answer_cut_short_after_its_head_counts_502(client: HttpTarget) -> None:
    handler = answering(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n", b"0123456789", then="close"
    )
    async with serving(handler) as upstream:
        status, sent = await forward(client, upstream.url, make_call())
        assert status == 502
        assert sent.start["status"] == 200
        assert sent.body == b"0123456789"
        assert not sent.finished  # the response is left unfinished: the server cuts it
        assert client.idle_connections == 0


async def test_the_call_timeout_also_bounds_a_stalled_request_body() -> None:
    call = Call(
        target="http://127.0.0.1:9/unset",
        decision=DECISION,
        function="fn",
        version="v1",
        method="POST",
        path="/fn/x",
        raw_rest=b"/x",
        query=b"",
        headers=[(b"content-length", b"20")],
        receive=receiving(*body_messages(b"a" * 10, b"b" * 10)[:1]),  # then nothing, ever
        has_body=True,
    )

    async def wait_for_the_rest(peer: Peer) -> None:
        await peer.until_closed()

    async with pooled(timeout=0.2) as client, serving(wait_for_the_rest) as upstream:
        with pytest.raises(CallFailed) as failed:
            await asyncio.wait_for(client.invoke(aimed(call, upstream.url), Sent()), WAIT)
        assert failed.value.status == 504


# -- the pool limit ------------------------------------------------------------


async def test_the_pool_limits_connections_and_queues_the_rest() -> None:
    held = Held()
    async with pooled(pool_size=2) as client, serving(held) as upstream:
        calls = [
            asyncio.create_task(forward(client, upstream.url, make_call(raw_rest=b"/%d" % i)))
            for i in range(6)
        ]
        await held.arrived(2)
        assert upstream.accepted == 2
        assert not any(call.done() for call in calls)
        held.release.set()
        results = await asyncio.wait_for(asyncio.gather(*calls), WAIT)
        assert [(status, sent.body) for status, sent in results] == [(200, b"ok")] * 6
        assert sorted(r.line for r in upstream.requests) == sorted(
            f"GET /{i} HTTP/1.1" for i in range(6)
        )
        assert upstream.max_open <= 2
        assert upstream.accepted == 2
        assert client.idle_connections == 2


async def test_a_call_cancelled_while_waiting_for_the_pool_gives_no_slot_away() -> None:
    held = Held()
    async with pooled(pool_size=1) as client, serving(held) as upstream:
        first = asyncio.create_task(forward(client, upstream.url, make_call()))
        await held.arrived(1)
        waiting = asyncio.create_task(forward(client, upstream.url, make_call()))
        await asyncio.sleep(0)  # let it queue for the one slot
        assert not waiting.done()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        held.release.set()
        assert (await asyncio.wait_for(first, WAIT))[0] == 200
        # the slot came back: two more calls, one after the other, on the one connection
        for _ in range(2):
            assert (await forward(client, upstream.url, make_call()))[0] == 200
        assert upstream.accepted == 1
        assert len(upstream.requests) == 3


async def test_a_call_that_waits_for_the_pool_past_its_timeout_is_a_504() -> None:
    held = Held()
    async with pooled(pool_size=1, timeout=WAIT) as client, serving(held) as upstream:
        first = asyncio.create_task(forward(client, upstream.url, make_call()))
        await held.arrived(1)
        client.timeout = 0.3  # the next call's whole-call timeout; the first keeps its own
        with pytest.raises(CallFailed) as failed:
            await asyncio.wait_for(client.invoke(aimed(make_call(), upstream.url), Sent()), WAIT)
        assert failed.value.status == 504
        assert "no connection of the pool (1) came free within 0.3s" in failed.value.detail
        held.release.set()
        assert (await asyncio.wait_for(first, WAIT))[0] == 200
        assert upstream.accepted == 1
        assert len(upstream.requests) == 1  # the second call never reached the upstream


async def test_the_pool_limit_holds_across_upstreams() -> None:
    """With one connection allowed, calling a second upstream closes the idle one of the first."""
    async with (
        pooled(pool_size=1) as client,
        serving(serve_all) as first,
        serving(serve_all) as second,
    ):
        assert (await forward(client, first.url, make_call()))[0] == 200
        assert client.idle_connections == 1
        first.closed.clear()
        assert (await forward(client, second.url, make_call()))[0] == 200
        await asyncio.wait_for(first.closed.wait(), WAIT)  # the first's connection went
        assert (first.open_now, second.open_now) == (0, 1)
        assert client.idle_connections == 1
        assert (await forward(client, second.url, make_call()))[0] == 200
        assert second.accepted == 1


# -- unusable targets ----------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "ftp://h/x",
        "file:///etc/passwd",
        "h/x",
        "localhost:8080/x",
        "http:///x",
        "http://:8080/x",
        "https://",
        "http://h:99999/",
        "http://h:port/",
    ],
)
def test_unusable_targets_are_refused(target: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        Origin.parse(target)
    with pytest.raises(CallFailed) as failed:
        HttpTarget().origin(target)
    assert failed.value.status == 502
    assert "unusable upstream URL" in failed.value.detail


async def test_forward_to_an_unusable_target_fails_without_answering() -> None:
    sent = Sent()
    with pytest.raises(CallFailed) as failed:
        await HttpTarget().invoke(aimed(make_call(), "ftp://h/x"), sent)
    assert failed.value.status == 502
    assert "ftp://h/x" in failed.value.detail
    assert sent.messages == []


async def test_a_target_path_outside_ascii_is_sent_percent_encoded(client: HttpTarget) -> None:
    async with serving(serve_all) as upstream:
        status, sent = await forward(client, f"{upstream.url}/caf\u20ac?q=\u00e9", make_call())
        assert (status, sent.body) == (200, b"ok")
        assert upstream.requests[0].line == "GET /caf%E2%82%AC/x?q=%C3%A9 HTTP/1.1"


def test_usable_targets_are_taken_apart() -> None:
    assert Origin.parse("http://h") == Origin("http", "h", 80, b"h", "/", "")
    assert Origin.parse("HTTPS://u:p@Api.Example:8443/fn?stage=prod") == Origin(
        "https", "api.example", 8443, b"Api.Example:8443", "/fn", "stage=prod"
    )
    assert Origin.parse("http://[::1]:9000/a").key == ("http", "::1", 9000)


# -- post: a whole request the gateway makes itself ------------------------------------


async def test_post_sends_one_whole_request_and_reads_the_answer_whole(
    client: HttpTarget,
) -> None:
    async with serving(echo) as upstream:
        url = f"{upstream.url}/2015-03-31/functions/fn/invocations?Qualifier=2"
        for body in (b'{"a":1}', b""):
            status, headers, data = await client.post(url, [(b"x-amz-date", b"d")], body)
            assert (status, data) == (200, body)
            assert (b"content-length", str(len(body)).encode()) in headers
        first = upstream.requests[0]
        assert first.line == "POST /2015-03-31/functions/fn/invocations?Qualifier=2 HTTP/1.1"
        assert first.header("host") == f"127.0.0.1:{upstream.port}"
        assert first.header("content-length") == "7"
        assert first.header("x-amz-date") == "d"
        assert upstream.accepted == 1  # kept alive and reused
        assert client.idle_connections == 1


async def test_post_reads_a_chunked_answer_that_comes_in_pieces(client: HttpTarget) -> None:
    handler = answering(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        b"6\r\nhello \r\n",
        b"5\r\nworld\r\n0\r\n\r\n",
    )
    async with serving(handler) as upstream:
        status, _, data = await client.post(upstream.url, [], b"{}")
        assert (status, data) == (200, b"hello world")


async def test_post_times_out_with_504_and_drops_the_connection() -> None:
    held = Held()
    async with pooled(timeout=0.2) as client, serving(held) as upstream:
        with pytest.raises(CallFailed) as failed:
            await client.post(upstream.url, [], b"{}")
        assert failed.value.status == 504
        assert client.idle_connections == 0
        held.release.set()


async def test_post_of_a_broken_answer_or_refused_connection_is_502(client: HttpTarget) -> None:
    async with serving(answering(b"NOT HTTP\r\n\r\n", then="close")) as upstream:
        with pytest.raises(CallFailed) as failed:
            await client.post(upstream.url, [], b"{}")
        assert failed.value.status == 502
        assert client.idle_connections == 0
        port = upstream.port
    with pytest.raises(CallFailed) as refused:
        await client.post(f"http://127.0.0.1:{port}/", [], b"{}")
    assert refused.value.status == 502
