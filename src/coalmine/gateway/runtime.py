"""`LocalTarget`: the `FunctionTarget` of local versions, running ``pkg.mod:handler`` in-process, as Lambda would.

Each (function, version) loads its handler module afresh under its own name
(`coalmine.integrations.handlers.HandlerLoader`), so v1 and v2 of one module
have separate globals and coexist in one process.

A call gets an API Gateway HTTP API (payload 2.0) event and a small context
object, runs in a thread pool inside the SDK's routing scope
(`coalmine.sdk.scope.use`, so its instrumented outgoing calls carry the
gateway's signed context), and its
return value maps to a response as the Lambda proxy integration maps it
(`build_event` and `reply_of`: what a Lambda target sends and gets back too).
The whole reply is sent in one body message.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from email.utils import formatdate
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl

from coalmine.core.model import Decision
from coalmine.core.ports import Call
from coalmine.gateway.asgi import CallFailed, RawHeaders, Reply, Send, json_body, read_body
from coalmine.integrations.handlers import HandlerLoader
from coalmine.sdk.scope import use

__all__ = ["HandlerContext", "LocalRuntime", "LocalTarget", "Reply", "build_event", "reply_of"]

log = logging.getLogger(__name__)

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


def build_event(
    call: Call, body: bytes, *, request_id: str, now: float, source_ip: str
) -> dict[str, Any]:
    """An API Gateway HTTP API payload 2.0 event for ``call``."""
    headers: dict[str, str] = {}
    for k, v in call.headers:
        name, value = k.decode("latin-1").lower(), v.decode("latin-1")
        if name in headers:
            value = headers[name] + ("; " if name == "cookie" else ",") + value
        headers[name] = value
    cookies = [c.strip() for c in headers.pop("cookie", "").split(";") if c.strip()]
    raw_query = call.query.decode("latin-1")
    params: dict[str, str] = {}
    for key, val in parse_qsl(raw_query, keep_blank_values=True):
        params[key] = f"{params[key]},{val}" if key in params else val
    host = headers.get("x-forwarded-host", headers.get("host", "localhost"))
    rest = call.raw_rest.decode("latin-1").lstrip("/")
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": call.path,
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "coalmine-gateway",
            "domainName": host,
            "domainPrefix": host.split(".", 1)[0],
            "http": {
                "method": call.method,
                "path": call.path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": formatdate(now, usegmt=True),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if params:
        event["queryStringParameters"] = params
    if rest:
        event["pathParameters"] = {"proxy": rest}
    if body:
        try:
            event["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
    return event


def reply_of(result: object) -> Reply:
    """Map a handler's return value as the Lambda proxy integration (payload 2.0) does.

    A dict with ``statusCode`` describes the response (``headers``,
    ``multiValueHeaders``, ``cookies``, ``body``, ``isBase64Encoded``); any
    other JSON-serialisable value is a 200 JSON body. Raises ValueError or
    TypeError when the value cannot be mapped.
    """
    if not (isinstance(result, dict) and "statusCode" in result):
        body = json_body(result)
        return Reply(200, [(b"content-type", b"application/json")], body)
    status = result["statusCode"]
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError(f"statusCode {status!r} is not an HTTP status")
    headers: RawHeaders = []
    for name, value in (result.get("headers") or {}).items():
        headers.append((str(name).lower().encode("latin-1"), str(value).encode("latin-1")))
    for name, values in (result.get("multiValueHeaders") or {}).items():
        for value in values:
            headers.append((str(name).lower().encode("latin-1"), str(value).encode("latin-1")))
    for cookie in result.get("cookies") or ():
        headers.append((b"set-cookie", str(cookie).encode("latin-1")))
    if not any(k == b"content-type" for k, _ in headers):
        headers.append((b"content-type", b"application/json"))
    raw = result.get("body")
    if raw is None:
        data = b""
    elif isinstance(raw, str):
        data = (
            base64.b64decode(raw, validate=True) if result.get("isBase64Encoded") else raw.encode()
        )
    else:  # lenient: API Gateway wants a string, a handler may return a dict
        data = json_body(raw)
    headers = [(k, v) for k, v in headers if k != b"content-length"]
    return Reply(status, headers, data)


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
                log.exception("%s could not be loaded", what)
                raise CallFailed(
                    502, f"{what} could not be loaded: {type(exc).__name__}: {exc}"
                ) from exc
            try:
                with self._scope(call.decision, call.token):
                    result = handler(event, context)
            except Exception as exc:
                log.exception("%s raised", what)
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
            raise CallFailed(504, f"{what} did not return within {self.timeout:g}s") from None


LocalRuntime = LocalTarget
"""`LocalTarget`'s name before the `FunctionTarget` port (kept for imports of it)"""
