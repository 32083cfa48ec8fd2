"""Discovery for client-side routing: one user's versions, URLs and channel.

``GET /v1/discovery`` answers for one user (ETag, 304), ``POST
/v1/discovery/batch`` for up to 10,000 users at once, and ``GET
/v1/discovery/stream`` sends the answer again whenever it changes (SSE).

One user's answer is readable with the app's browser key (``Authorization:
Bearer`` or, since a browser's ``EventSource`` cannot send headers, ``?key=``),
with its sdk key or a viewer token (header only: a URL ends up in logs, and a
server key in a URL is a server key in a page). The batch (any users, many at
once) needs the sdk key or a viewer: a browser key asks for one user at a
time. Answers carry ``Access-Control-Allow-Origin: *``: the callers are
browsers on other origins, and no cookie is involved.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from coalmine.controller.tokens import APP_ROLES, Principal
from coalmine.core.errors import NotFound
from coalmine.core.model import NAME_PATTERN
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.web.auth import (
    INVALID_TOKEN,
    _bearer,  # one scheme in the OpenAPI document
)
from coalmine.web.deps import KeysDep, SnapshotsDep
from coalmine.web.discovery import (
    DiscoverySettings,
    answer_bytes,
    canonical,
    discover,
    same_answer,
)
from coalmine.web.openapi import sse_event
from coalmine.web.routes.routing import etag_matches
from coalmine.web.snapshot_cache import SnapshotCache
from coalmine.web.sse import (
    KEEPALIVE,
    RETRY_MS,
    REVOKED_EVENT,
    Credential,
    SnapshotStream,
    format_event,
)

__all__ = [
    "CORS",
    "MAX_BATCH_USERS",
    "MISSING_KEY",
    "DiscoveryBatch",
    "discovery_caller",
    "preflight",
    "router",
]

router = APIRouter(prefix="/v1/discovery", tags=["discovery"])

MAX_BATCH_USERS = 10_000
MISSING_KEY = (
    "missing key: pass 'Authorization: Bearer <browser key>' or ?key=<browser key>"
    " (servers: the sdk key, in the header)"
)
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "ETag",
}
_PREFLIGHT = {
    **CORS,
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, X-API-Key, Content-Type, If-None-Match, baggage",
    "Access-Control-Max-Age": "600",
}
_NO_CACHE = {"Cache-Control": "no-cache", **CORS}

_query_key = APIKeyQuery(
    name="key",
    auto_error=False,
    scheme_name="SdkKeyQuery",
    description="The app's browser key as a query parameter, for EventSource (discovery only).",
)


def _refuse(status: int, detail: str) -> HTTPException:
    headers = dict(CORS)
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return HTTPException(status, detail, headers=headers)


async def discovery_caller(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    key: Annotated[str | None, Depends(_query_key)],
    keys: KeysDep,
) -> Principal:
    """The caller, by bearer token or by a browser key in ``?key=``."""
    if credentials is not None and credentials.credentials:
        secret, in_query = credentials.credentials, False
    elif key:
        secret, in_query = key, True
    else:
        raise _refuse(401, MISSING_KEY)
    principal = await keys.authenticate(secret)
    if principal is None:
        raise _refuse(401, INVALID_TOKEN)
    if in_query and principal.role == "sdk":
        raise _refuse(
            403,
            "this sdk key is a server credential: never put it in a URL or a web page."
            " Create a browser key for pages (coalmine token create --name web --role browser"
            f" --app {principal.app}), use it here, and revoke this sdk key if it was ever in a"
            " page (coalmine token revoke ID)",
        )
    if in_query and principal.role != "browser":
        raise _refuse(
            403,
            "only a browser key may be passed as ?key= (URLs end up in logs);"
            " send other tokens in the Authorization header",
        )
    return principal


DiscoveryCaller = Annotated[Principal, Depends(discovery_caller)]


def _required(value: str | None, name: str, hint: str) -> str:
    if not value:
        raise _refuse(400, f"pass {name}=<{hint}>")
    return value


def _check_reader(app: str, principal: Principal, *, many: bool = False) -> None:
    """One user: the app's browser or sdk key, or a viewer; many: no browser key."""
    if principal.can_discover_many(app) if many else principal.can_discover(app):
        return
    if principal.role in APP_ROLES and principal.app != app:
        raise _refuse(
            403,
            f"this {principal.role} key answers only for app {principal.app!r}, not {app!r};"
            f" use the {principal.role} key of {app!r}",
        )
    if principal.role == "browser":
        raise _refuse(
            403,
            "a browser key asks discovery for one user at a time (GET /v1/discovery);"
            " the batch needs the app's sdk key or a viewer token",
        )
    raise _refuse(403, f"role {principal.role} cannot ask discovery; needs viewer")


async def _snapshot(snapshots: SnapshotCache, app: str) -> RoutingSnapshot:
    try:
        return (await snapshots.get(app)).snapshot
    except NotFound as exc:
        raise _refuse(404, str(exc)) from exc


def _settings(request: Request) -> DiscoverySettings:
    settings: DiscoverySettings = request.app.state.discovery
    return settings


AppQuery = Annotated[str | None, Query(description="the app's name")]
UserQuery = Annotated[
    str | None, Query(description="the user's key (what the SDK and the gateway bucket by)")
]
ContextQuery = Annotated[
    str | None,
    Query(description="a signed routing context from an earlier answer: pins its channel"),
]
OverrideQuery = Annotated[str | None, Query(description="a signed tester override token")]

_ANSWER_DOC: dict[int | str, dict[str, Any]] = {
    200: {"description": "the user's answer (see docs/discovery.md); weak ETag header set"},
    304: {"description": "If-None-Match matched: the answer has not changed"},
    400: {"description": "`pass user=<the user's key>` (or app)"},
}
_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "`event: discovery` / `data: <answer json>`: the answer at once, then"
        " again whenever it changes; `: keepalive` comments",
        "content": {"text/event-stream": {"schema": sse_event("discovery", "an answer")}},
    }
}


@router.get("", summary="One user's versions, URLs and channel", responses=_ANSWER_DOC)
async def discovery(
    request: Request,
    principal: DiscoveryCaller,
    snapshots: SnapshotsDep,
    app: AppQuery = None,
    user: UserQuery = None,
    context: ContextQuery = None,
    override: OverrideQuery = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    app_name = _required(app, "app", "the app's name")
    user_key = _required(user, "user", "the user's key")
    _check_reader(app_name, principal)
    snapshot = await _snapshot(snapshots, app_name)
    answer = discover(
        snapshot,
        user_key,
        _settings(request),
        now=time.time(),
        context=context,
        override=override,
    )
    content, etag = answer_bytes(answer)
    headers = {"ETag": etag, **_NO_CACHE}
    if etag_matches(if_none_match, etag.removeprefix("W/")):
        return Response(status_code=304, headers=headers)
    return Response(content, media_type="application/json", headers=headers)


class DiscoveryBatch(BaseModel):
    """Answers for many users of one app, from one snapshot."""

    model_config = ConfigDict(extra="forbid")
    app: str = Field(pattern=f"^{NAME_PATTERN.pattern}$")
    users: list[Annotated[str, Field(min_length=1, max_length=1024)]] = Field(
        min_length=1, max_length=MAX_BATCH_USERS
    )


@router.post(
    "/batch",
    summary=f"Answers for up to {MAX_BATCH_USERS:,} users",
    responses={200: {"description": '`{"app", "revision", "answers": [answer, ...]}`'}},
)
async def discovery_batch(
    body: DiscoveryBatch, request: Request, principal: DiscoveryCaller, snapshots: SnapshotsDep
) -> Response:
    _check_reader(body.app, principal, many=True)
    settings = _settings(request)
    snapshot = await _snapshot(snapshots, body.app)

    def build() -> bytes:  # up to 10,000 answers: off the event loop
        now = time.time()
        answers = [discover(snapshot, u, settings, now=now) for u in body.users]
        return canonical({"app": body.app, "revision": snapshot.revision, "answers": answers})

    content = await run_in_threadpool(build)
    return Response(content, media_type="application/json", headers=_NO_CACHE)


async def answer_events(
    stream: SnapshotStream,
    build: Callable[[RoutingSnapshot, float], dict[str, Any]],
    settings: DiscoverySettings,
    *,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[str]:
    """One user's answers as SSE text: the first at once, then each one that differs.

    Every snapshot the stream yields (one per change of the app) is evaluated;
    an answer equal to the last one sent is not sent again. An idle heartbeat
    is a keepalive comment, unless the signed context's window has rolled
    over: then the answer is rebuilt from the last snapshot, with a renewed
    context, and sent.
    """
    last: dict[str, Any] | None = None
    current: RoutingSnapshot | None = None
    window: int | None = None
    try:
        async with aclosing(stream.snapshots()) as snapshots:
            async for got in snapshots:
                now = clock()
                if got is None:
                    renew = settings.keyring is not None and settings.window(now) != window
                    if current is None or not renew:
                        yield KEEPALIVE
                        continue
                    got = current
                current, window = got, settings.window(now)
                answer = build(got, now)
                if last is not None and same_answer(last, answer):
                    continue
                data = canonical(answer).decode()
                yield format_event("discovery", data, retry=RETRY_MS if last is None else None)
                last = answer
        if stream.revoked:
            yield REVOKED_EVENT
    finally:
        stream.close()


@router.get(
    "/stream",
    summary="Server-Sent Events: one user's answer now and whenever it changes",
    response_class=StreamingResponse,
    responses=_STREAM_DOC,
)
async def discovery_stream(
    request: Request,
    principal: DiscoveryCaller,
    snapshots: SnapshotsDep,
    keys: KeysDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    key: Annotated[str | None, Depends(_query_key)],
    app: AppQuery = None,
    user: UserQuery = None,
    context: ContextQuery = None,
    override: OverrideQuery = None,
) -> StreamingResponse:
    app_name = _required(app, "app", "the app's name")
    user_key = _required(user, "user", "the user's key")
    _check_reader(app_name, principal)
    settings = _settings(request)
    # the credential discovery_caller authenticated: the header's, else ?key=
    secret = credentials.credentials if credentials and credentials.credentials else key or ""
    stream = SnapshotStream(
        snapshots,
        app_name,
        heartbeat=float(request.app.state.heartbeat),
        credential=Credential(keys, secret, principal),
    )
    try:
        await stream.open()
    except NotFound as exc:
        raise _refuse(404, str(exc)) from exc

    def build(snapshot: RoutingSnapshot, now: float) -> dict[str, Any]:
        return discover(snapshot, user_key, settings, now=now, context=context, override=override)

    return StreamingResponse(
        answer_events(stream, build, settings),
        media_type="text/event-stream",
        headers={**_NO_CACHE, "X-Accel-Buffering": "no"},
    )


async def preflight() -> Response:
    """A CORS preflight: any origin may call with these headers (no cookies are used)."""
    return Response(status_code=204, headers=_PREFLIGHT)


for _path in ("", "/batch", "/stream"):
    router.add_api_route(_path, preflight, methods=["OPTIONS"], include_in_schema=False)
