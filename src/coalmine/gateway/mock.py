"""`MockTarget`: the in-memory `FunctionTarget`, answering with a function of the call.

Like httpx's ``MockTransport``, the test double ships with the library: give a
`Gateway` a ``MockTarget`` for a kind of target and every version of that
kind answers ``handler(call, body)``, no server or handler module needed::

    def handler(call: Call, body: bytes) -> Reply:
        return Reply(200, [(b"content-type", b"text/plain")], call.version.encode())

    gateway = Gateway(config, source, targets={TargetKind.HTTP: MockTarget(handler)})

``handler`` is a plain function or a coroutine function. It gets the `Call`
and its whole request body, and returns a `Reply`, sent in one piece with
``call.response_headers`` appended (as a local handler's reply is). It may
raise `CallFailed` to fail the call; any other exception fails it with a
502, as a local handler that raised does.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from coalmine.core.ports import Call
from coalmine.gateway.asgi import CallFailed, Reply, Send, read_body

__all__ = ["MockHandler", "MockTarget"]

MockHandler = Callable[[Call, bytes], Reply | Awaitable[Reply]]
"""``handler(call, body) -> Reply``, or a coroutine function returning one"""


class MockTarget:
    """A `FunctionTarget` whose every call answers ``handler(call, body)``.

    ``calls`` keeps every call made (tests look at them); ``max_body`` bounds a
    request body (413 past it), as a local handler's is.
    """

    def __init__(self, handler: MockHandler, *, max_body: int = 6 * 1024 * 1024) -> None:
        self.handler = handler
        self.max_body = max_body
        self.calls: list[Call] = []
        self.started = False
        self.closed = False

    async def start(self) -> None:
        self.started = True

    async def invoke(self, call: Call, send: Send) -> int:
        self.calls.append(call)
        body = await read_body(call, self.max_body, "the mock target's limit")
        try:
            reply = self.handler(call, body)
            if inspect.isawaitable(reply):
                reply = await reply
        except CallFailed:
            raise
        except Exception as exc:
            raise CallFailed(
                502,
                f"mock target {call.target} for {call.function} {call.version}"
                f" raised {type(exc).__name__}: {exc}",
                error={"type": type(exc).__name__, "message": str(exc)},
            ) from exc
        await send(reply.start(call.response_headers))
        await send({"type": "http.response.body", "body": reply.body})
        return reply.status

    async def close(self) -> None:
        self.closed = True
