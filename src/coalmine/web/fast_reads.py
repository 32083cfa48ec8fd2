"""The polled reads, served without FastAPI's per-request machinery.

Discovery for one user (``GET /v1/discovery``), OFREP (``POST
/ofrep/v1/evaluate/flags[/{key}]``) and the routing snapshot (``GET
/v1/apps/{app}/routing``) are what every page load, flag provider and
polling SDK calls. With their snapshot and key in memory, most of what such
a request cost was FastAPI's: finding the route among all the others and
solving its dependencies, about three times the endpoint's own work.

`FastReads` is an ASGI middleware that recognises those paths by plain
string comparison and calls the very endpoint functions FastAPI would
(`coalmine.web.routes.discovery.discovery`, ...), with their dependencies
resolved by hand through the same callables (the bearer scheme, the key
cache, `discovery_caller`, `routing_reader`). There is one implementation of
each endpoint; only the lookup is faster. Anything but the plain answer (a
refusal, an unknown app: an `HTTPException` or a domain error) falls
through to FastAPI, which runs the route again from the start and answers
as it always has; so do a store that cannot be reached (FastAPI's handler
answers 503), a query parameter the endpoint does not take (a 422 there),
and every other path, method and trailing slash.
"""

from __future__ import annotations

from collections.abc import Awaitable

from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coalmine.core.errors import CoalmineError
from coalmine.web import auth
from coalmine.web.key_cache import KeyCache
from coalmine.web.routes import discovery, ofrep, routing
from coalmine.web.snapshot_cache import SnapshotCache

__all__ = ["FastReads"]

_DISCOVERY = "/v1/discovery"
_APPS, _ROUTING = "/v1/apps/", "/routing"
_FLAGS = "/ofrep/v1/evaluate/flags"
_DISCOVERY_QUERY = frozenset({"app", "user", "context", "override", "key"})
_FALL_THROUGH = (HTTPException, CoalmineError, OperationalError)
"""what FastAPI answers instead: a refusal, a domain error, the store out of reach (503)"""


class FastReads:
    """Serve the polled reads by calling their endpoints directly; pass the rest on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        response: Response | None = None
        query = Request(scope).query_params if scope.get("query_string") else None
        if method == "GET":
            if path == _DISCOVERY and (query is None or _DISCOVERY_QUERY.issuperset(query)):
                response = await _passable(_discovery(Request(scope, receive)))
            elif path.startswith(_APPS) and path.endswith(_ROUTING) and query is None:
                app = path[len(_APPS) : -len(_ROUTING)]
                if app and "/" not in app:
                    response = await _passable(_routing(Request(scope, receive), app))
        elif method == "POST" and path.startswith(_FLAGS) and query is None:
            key = path[len(_FLAGS) + 1 :] if path != _FLAGS else None
            if path == _FLAGS or (path[len(_FLAGS)] == "/" and key and "/" not in key):
                recorded = _Recorded(receive)
                try:
                    response = await _ofrep(Request(scope, recorded), key)
                except _FALL_THROUGH:
                    receive = recorded.replay()
        if response is None:
            await self.app(scope, receive, send)
        else:
            await response(scope, receive, send)


async def _passable(answer: Awaitable[Response]) -> Response | None:
    """The endpoint's response, or None when it refused (FastAPI then answers)."""
    try:
        return await answer
    except _FALL_THROUGH:
        return None


def _caches(request: Request) -> tuple[KeyCache, SnapshotCache]:
    state = request.app.state
    return state.keys, state.snapshots


async def _discovery(request: Request) -> Response:
    keys, snapshots = _caches(request)
    query = request.query_params
    principal = await discovery.discovery_caller(
        await auth._bearer(request), await discovery._query_key(request), keys
    )
    return await discovery.discovery(
        request,
        principal,
        snapshots,
        app=query.get("app"),
        user=query.get("user"),
        context=query.get("context"),
        override=query.get("override"),
        if_none_match=request.headers.get("if-none-match"),
    )


async def _routing(request: Request, app: str) -> Response:
    keys, snapshots = _caches(request)
    principal = await auth.authenticate(await auth._bearer(request), keys)
    reader = await auth.routing_reader(app, principal)
    return await routing.routing(
        app, reader, snapshots, if_none_match=request.headers.get("if-none-match")
    )


async def _ofrep(request: Request, key: str | None) -> Response:
    keys, snapshots = _caches(request)
    bearer = await auth._bearer(request)
    api_key = await ofrep._api_key(request)
    if key is None:
        return await ofrep.evaluate_flags(
            request,
            snapshots,
            keys,
            bearer,
            api_key,
            if_none_match=request.headers.get("if-none-match"),
        )
    return await ofrep.evaluate_flag(key, request, snapshots, keys, bearer, api_key)


class _Recorded:
    """A ``receive`` that keeps what it gave, to give it again to FastAPI on a fall-through."""

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.seen: list[Message] = []

    async def __call__(self) -> Message:
        message = await self.receive()
        self.seen.append(message)
        return message

    def replay(self) -> Receive:
        pending = list(self.seen)

        async def again() -> Message:
            return pending.pop(0) if pending else await self.receive()

        return again
