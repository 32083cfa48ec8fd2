"""`LocalTarget`: the `FunctionTarget` of local versions, running ``pkg.mod:handler`` in-process, as Lambda would.

Each (function, version) loads its handler module afresh under its own name
(`coalmine.integrations.handlers.HandlerLoader`), so v1 and v2 of one module
have separate globals and coexist in one process.

A call gets an API Gateway HTTP API (payload 2.0) event and a small context
object, runs in a thread pool inside the SDK's routing scope
(`coalmine.sdk.scope.use`, so its instrumented outgoing calls carry the
gateway's signed context), and its
return value maps to a response as the Lambda proxy integration maps it
(`coalmine.gateway.event`: what a Lambda target sends and gets back too).
The whole reply is sent in one body message.
"""

from __future__ import annotations

import asyncio
import binascii
import contextvars
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from coalmine.core.model import Decision
from coalmine.core.ports import Call
from coalmine.gateway.asgi import CallFailed, Reply, Send, read_body
from coalmine.gateway.event import build_event, reply_of
from coalmine.integrations.handlers import HandlerLoader
from coalmine.sdk.scope import use

__all__ = ["HandlerContext", "LocalRuntime", "LocalTarget", "Reply", "build_event", "reply_of"]


Handler = Callable[[dict[str, Any], "HandlerContext"], object]
ScopeFactory = Callable[[Decision, str | None], AbstractContextManager[object]]


@dataclass
class HandlerContext:
    """The Lambda context object, reduced to what a handler usually reads."""

    function_name: str
    function_version: str
    aws_request_id: str
    deadline: float = field(repr=False)
    """time.monotonic() by which the gateway stops waiting"""
    invoked_function_arn: str = ""
    memory_limit_in_mb: int = 0

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


class LocalTarget:
    """The `FunctionTarget` of local versions: loads and runs handlers, one module
    namespace per (function, version)."""

    def __init__(
        self,
        *,
        workers: int = 32,
        timeout: float = 30.0,
        max_body: int = 6 * 1024 * 1024,
        scope: ScopeFactory = use,
    ) -> None:
        self.timeout = timeout
        self.max_body = max_body
        self._scope = scope
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="coalmine-fn")
        self._loader = HandlerLoader()

    async def start(self) -> None:
        """Nothing to prepare: handlers are loaded on their first call."""

    async def close(self) -> None:
        """Stop the threads and unregister the loaded modules from ``sys.modules``."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._loader.close()

    def module(self, function: str, version: str, ref: str) -> ModuleType | None:
        """The module a loaded handler lives in (for tests and debugging)."""
        return self._loader.module(function, version, ref)

    def load(self, function: str, version: str, ref: str) -> Handler:
        """The handler of ``ref`` for this function's version, loading it on first use."""
        return self._loader.load(function, version, ref)

    async def invoke(self, call: Call, send: Send) -> int:
        """Run the handler of ``call.target`` and send its reply; its status.

        Raises `CallFailed` when the handler cannot answer (see `run`).
        """
        reply = await self.run(call)
        await send(reply.start(call.response_headers))
        await send({"type": "http.response.body", "body": reply.body})
        return reply.status

    async def run(self, call: Call) -> Reply:
        """Run the handler of ``call.target`` for ``call``; raise `CallFailed` when it cannot answer."""
        ref = call.target
        what = f"local handler {ref} for {call.function} {call.version}"
        body = await read_body(call, self.max_body, "the local handler limit")
        request_id = str(uuid.uuid4())
        deadline = time.monotonic() + self.timeout
        event = build_event(
            call, body, request_id=request_id, now=time.time(), source_ip=call.source_ip
        )
        context = HandlerContext(call.function, call.version, request_id, deadline)

        def run() -> Reply:
            try:
                handler = self.load(call.function, call.version, ref)
            except Exception as exc:
                raise CallFailed(
                    502, f"{what} could not be loaded: {type(exc).__name__}: {exc}"
                ) from exc
            try:
                with self._scope(call.decision, call.token):
                    result = handler(event, context)
            except Exception as exc:
                raise CallFailed(
                    502,
                    f"{what} raised {type(exc).__name__}: {exc}",
                    error={"type": type(exc).__name__, "message": str(exc)},
                ) from exc
            try:
                return reply_of(result)
            except (TypeError, ValueError, binascii.Error) as exc:
                raise CallFailed(
                    502, f"{what} returned a value that is not a response: {exc}"
                ) from exc

        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, contextvars.copy_context().run, run)
        try:
            return await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            late = CallFailed(504, f"{what} did not return within {self.timeout:g}s")
            late.request_id = request_id
            raise late from None
        except CallFailed as exc:
            # the gateway logs it (`coalmine.gateway.failures`), its cause's traceback rate-limited
            exc.request_id = request_id
            raise


LocalRuntime = LocalTarget
"""`LocalTarget`'s name before the `FunctionTarget` port (kept for imports of it)"""
