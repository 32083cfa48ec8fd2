"""The data plane's reads: an app's routing snapshot (with ETag) and its SSE stream.

Readable with a viewer token or with the sdk key of that app. Both read the
snapshot from the `SnapshotCache`: a poll (a 304 above all) reads no database.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials

from coalmine.web.auth import RoutingReader, _bearer
from coalmine.web.deps import KeysDep, SnapshotsDep
from coalmine.web.openapi import sse_event
from coalmine.web.sse import Credential, SnapshotStream

__all__ = ["etag_matches", "router"]

router = APIRouter(prefix="/v1/apps/{app}", tags=["routing"])

_SNAPSHOT_DOC: dict[int | str, dict[str, Any]] = {
    200: {"description": "the routing snapshot (RoutingSnapshot.to_dict); ETag header set"},
    304: {"description": "If-None-Match matched: the snapshot has not changed"},
}
_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "`event: snapshot` / `id: <revision>` / `data: <snapshot json>` events"
        " (the current one at once, then one per change) and `: keepalive` comments",
        "content": {"text/event-stream": {"schema": sse_event("snapshot", "a routing snapshot")}},
    }
}
_NO_CACHE = {"Cache-Control": "no-cache"}


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison of an If-None-Match list (or ``*``) with ``etag``."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


@router.get("/routing", summary="The app's routing snapshot", responses=_SNAPSHOT_DOC)
async def routing(
    app: str,
    _: RoutingReader,
    snapshots: SnapshotsDep,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    cached = await snapshots.get(app)
    headers = {"ETag": cached.etag, **_NO_CACHE}
    if etag_matches(if_none_match, cached.etag):
        return Response(status_code=304, headers=headers)
    return Response(cached.body(), media_type="application/json", headers=headers)


@router.get(
    "/routing/stream",
    summary="Server-Sent Events: the snapshot now and after every change",
    response_class=StreamingResponse,
    responses=_STREAM_DOC,
)
async def routing_stream(
    app: str,
    request: Request,
    principal: RoutingReader,
    snapshots: SnapshotsDep,
    keys: KeysDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> StreamingResponse:
    secret = credentials.credentials if credentials is not None else ""
    stream = SnapshotStream(
        snapshots,
        app,
        heartbeat=float(request.app.state.heartbeat),
        credential=Credential(keys, secret, principal),
    )
    await stream.open()
    return StreamingResponse(
        stream.events(),
        media_type="text/event-stream",
        headers={**_NO_CACHE, "X-Accel-Buffering": "no"},
    )
