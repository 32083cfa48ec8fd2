"""The `FunctionTarget` contract: one suite, run against every implementation.

`LocalTarget` (a handler module run in-process), `HttpTarget` (an aiohttp
server on 127.0.0.1), `LambdaTarget` (Lambda versions behind the local Invoke
endpoint, reached as boto3 would reach AWS) and `MockTarget` (the in-memory
one) each call the same
echo function (`tests.ports.echo_fn`) and must all pass it unchanged: the
call reaches the function whole, the answer comes back through ``send`` as
one ``http.response.start`` (with the gateway's headers appended) and body
messages, the status to count is the function's, and a function that cannot
answer is a `CallFailed` before anything was sent.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from coalmine.core.model import Channel, Decision, Reason
from coalmine.core.ports import Call, CallFailed, FunctionTarget, Message
from coalmine.gateway import HttpTarget, LambdaTarget, LocalTarget, MockTarget, Reply
from coalmine.gateway.server import PROTOCOL
from coalmine.integrations.lambda_local import LambdaFunction, LocalLambda, serve_in_thread
from tests.gateway.fixtures.harness import free_port
from tests.ports.echo_fn import echoed

DECISION = Decision("shop", "r1", Channel.CANARY, {"fn": "v2"}, Reason.COHORT)
GATEWAY_HEADERS = [(b"x-coalmine-version", b"v2"), (b"x-coalmine-channel", b"canary")]


@dataclass
class Made:
    """A started target, the reference of its echo function, and of one that fails."""

    target: FunctionTarget
    echo: str
    failing: str


def mock_echo(call: Call, body: bytes) -> Reply:
    if call.target == "mock:boom":
        raise RuntimeError("the function failed")
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in call.headers}
    status, out, text = echoed(
        call.method, call.raw_rest.decode("latin-1"), call.query.decode("latin-1"), headers, body
    )
    return Reply(status, [(k.encode(), v.encode()) for k, v in out.items()], text.encode())


async def http_echo(request: web.Request) -> web.Response:
    status, out, text = echoed(
        request.method,
        request.raw_path.split("?")[0].removeprefix("/fn"),
        request.query_string,
        {k.lower(): v for k, v in request.headers.items()},
        await request.read(),
    )
    return web.Response(status=status, headers=out, body=text.encode())


@asynccontextmanager
async def echo_server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/fn{tail:.*}", http_echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture(params=["local", "http", "lambda", "mock"])
async def made(request: pytest.FixtureRequest) -> AsyncIterator[Made]:
    if request.param == "lambda":
        functions = {
            name: LambdaFunction(name, {"2": f"tests.ports.echo_fn:{ref}"}, timeout=5)
            for name, ref in (("echo", "handler"), ("boom", "boom"))
        }
        local = LocalLambda(functions)
        monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
        with serve_in_thread(local, http=PROTOCOL) as url:
            for name, value in (
                ("AWS_ENDPOINT_URL_LAMBDA", url),
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("AWS_DEFAULT_REGION", "us-east-1"),
            ):
                monkeypatch.setenv(name, value)
            target: FunctionTarget = LambdaTarget(timeout=5)
            await target.start()
            try:
                yield Made(target, "lambda:echo:2", "lambda:boom:2")
            finally:
                await target.close()
                local.close()
        return
    if request.param == "http":
        async with echo_server() as url:
            target = HttpTarget(timeout=5)
            await target.start()
            try:
                yield Made(target, f"{url}/fn", f"http://127.0.0.1:{free_port()}/nobody-listens")
            finally:
                await target.close()
        return
    if request.param == "local":
        target = LocalTarget(workers=2, timeout=5)
        echo, failing = "tests.ports.echo_fn:handler", "tests.ports.echo_fn:boom"
    else:
        target = MockTarget(mock_echo)
        echo, failing = "mock:echo", "mock:boom"
    await target.start()
    try:
        yield Made(target, echo, failing)
    finally:
        await target.close()


class Sent:
    """An ASGI send keeping what it was given."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def start(self) -> Message:
        return self.messages[0]

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return list(self.start["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])

    def echoed(self) -> Any:
        return json.loads(self.body)


def make_call(
    target: str,
    method: str = "GET",
    *,
    rest: bytes = b"/items/7",
    query: bytes = b"a=1&b=2",
    headers: Iterable[tuple[bytes, bytes]] = (),
    chunks: Iterable[bytes] = (),
) -> Call:
    pending: list[Message] = [
        {"type": "http.request", "body": c, "more_body": True} for c in chunks
    ]
    if pending:
        pending[-1]["more_body"] = False

    async def receive() -> Message:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    return Call(
        target=target,
        function="fn",
        version="v2",
        decision=DECISION,
        method=method,
        path="/fn" + rest.decode("latin-1"),
        raw_rest=rest,
        query=query,
        headers=[(b"x-test", b"1"), (b"baggage", b"team=blue,coalmine=tok"), *headers],
        receive=receive,
        has_body=bool(pending),
        token="tok",
        source_ip="10.0.0.1",
        response_headers=GATEWAY_HEADERS,
    )


def test_it_is_a_function_target(made: Made) -> None:
    assert isinstance(made.target, FunctionTarget)


async def test_the_call_reaches_the_function_and_its_answer_comes_back(made: Made) -> None:
    sent = Sent()
    status = await made.target.invoke(make_call(made.echo), sent)
    assert status == 200
    assert [m["type"] for m in sent.messages][:1] == ["http.response.start"]
    assert all(m["type"] == "http.response.body" for m in sent.messages[1:])
    assert len(sent.messages) >= 2
    assert not sent.messages[-1].get("more_body", False)  # the answer is complete
    assert sent.start["status"] == 200
    assert (b"x-echo", b"yes") in sent.headers
    assert (b"content-type", b"application/json") in sent.headers
    echoed = sent.echoed()
    assert (echoed["method"], echoed["rest"], echoed["query"]) == ("GET", "/items/7", "a=1&b=2")
    assert echoed["headers"]["x-test"] == "1"
    assert echoed["headers"]["baggage"] == "team=blue,coalmine=tok"
    assert echoed["body"] == ""


async def test_the_gateways_headers_are_appended_to_the_answer_once(made: Made) -> None:
    sent = Sent()
    await made.target.invoke(make_call(made.echo), sent)
    for header in GATEWAY_HEADERS:
        assert sent.headers.count(header) == 1
    assert sent.headers[-len(GATEWAY_HEADERS) :] == GATEWAY_HEADERS


async def test_the_request_body_reaches_the_function_whole(made: Made) -> None:
    call = make_call(
        made.echo,
        "POST",
        headers=[(b"content-length", b"11")],
        chunks=[b"hello ", b"world"],
    )
    sent = Sent()
    assert await made.target.invoke(call, sent) == 200
    echoed = sent.echoed()
    assert (echoed["method"], echoed["body"]) == ("POST", "hello world")


@pytest.mark.parametrize("status", [201, 404, 418, 503])
async def test_the_status_to_count_is_the_one_the_function_answered(
    made: Made, status: int
) -> None:
    sent = Sent()
    counted = await made.target.invoke(make_call(made.echo, query=b"status=%d" % status), sent)
    assert counted == status
    assert sent.start["status"] == status


async def test_a_function_that_cannot_answer_fails_the_call_before_any_message(
    made: Made,
) -> None:
    sent = Sent()
    with pytest.raises(CallFailed) as failed:
        await made.target.invoke(make_call(made.failing), sent)
    assert failed.value.status == 502
    assert failed.value.body()["detail"]
    assert sent.messages == []


async def test_start_is_idempotent_and_calls_go_on_after_a_failure(made: Made) -> None:
    await made.target.start()
    with pytest.raises(CallFailed):
        await made.target.invoke(make_call(made.failing), Sent())
    sent = Sent()
    assert await made.target.invoke(make_call(made.echo), sent) == 200
    assert sent.echoed()["rest"] == "/items/7"
