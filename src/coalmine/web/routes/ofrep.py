"""OFREP, the OpenFeature Remote Evaluation Protocol, over the discovery answer.

Any OpenFeature SDK with an OFREP provider can ask coalmine which channel and
versions a user gets. The app's browser key (or, on a server, its sdk key;
``Authorization: Bearer`` or ``X-API-Key``) names the app, and the app
defines the flags:

- ``<app>``: the channel, ``"stable"`` or ``"canary"``;
- ``<app>.<function>``: the URL to call for that function (the version name
  when there is no URL); the variant is the version.

``context.targetingKey`` is the user's key; ``context.coalmineContext``, a
signed routing context, pins like ``?context=`` on discovery. Errors have
OFREP's shapes: ``{"key", "errorCode", "errorDetails"}`` (single),
``{"errorCode", "errorDetails"}`` (bulk), ``{"errorDetails"}`` (401, 403).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials

from coalmine.controller.tokens import Principal
from coalmine.core.errors import InvalidInput, NotFound
from coalmine.core.wire import load_json
from coalmine.web.auth import (
    INVALID_TOKEN,
    _bearer,  # one scheme in the OpenAPI document
)
from coalmine.web.deps import KeysDep, SnapshotsDep
from coalmine.web.discovery import discover, ofrep_flag, ofrep_flags, tagged
from coalmine.web.key_cache import KeyCache
from coalmine.web.routes.discovery import CORS, preflight
from coalmine.web.routes.routing import etag_matches
from coalmine.web.snapshot_cache import SnapshotCache

__all__ = ["CONTEXT_ATTRIBUTE", "OfrepRequest", "router"]

router = APIRouter(prefix="/ofrep/v1", tags=["ofrep"])

CONTEXT_ATTRIBUTE = "coalmineContext"
"""the evaluation-context attribute that carries a signed routing context"""

_api_key = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="The app's browser key (`cmpub_...`), or on a server its sdk key (`cmsdk_...`).",
)
_JSON = {"Cache-Control": "no-cache", **CORS}

_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "context": {
                            "type": "object",
                            "description": "`targetingKey` is the user's key; `coalmineContext`"
                            " (optional) a signed routing context",
                        }
                    },
                }
            }
        }
    }
}
_OFREP_ERROR: dict[str, Any] = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["errorDetails"],
                "properties": {
                    "key": {"type": "string"},
                    "errorCode": {"type": "string"},
                    "errorDetails": {"type": "string"},
                },
            }
        }
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "`{key?, errorCode, errorDetails}`: PARSE_ERROR, INVALID_CONTEXT,"
        " TARGETING_KEY_MISSING",
        **_OFREP_ERROR,
    },
    401: {
        "description": '`{"errorDetails"}`: no key, or an unknown or revoked one',
        **_OFREP_ERROR,
    },
    403: {"description": '`{"errorDetails"}`: not a browser or sdk key', **_OFREP_ERROR},
}


class OfrepRequest:
    """A parsed evaluation request, or the error to answer with."""

    def __init__(self, user: str, context: str | None) -> None:
        self.user = user
        self.context = context

    @classmethod
    def parse(cls, raw: bytes) -> OfrepRequest | tuple[str, str]:
        """The request, or ``(errorCode, errorDetails)``."""
        try:
            body = load_json(raw or b"{}", "the body")
        except InvalidInput as exc:
            return "PARSE_ERROR", str(exc)
        if not isinstance(body, Mapping):
            return "PARSE_ERROR", 'the body must be a JSON object: {"context": {...}}'
        ctx = body.get("context")
        if ctx is None:
            return "TARGETING_KEY_MISSING", "pass context.targetingKey: the user's key"
        if not isinstance(ctx, Mapping):
            return "INVALID_CONTEXT", "context must be an object"
        user = ctx.get("targetingKey")
        if user is None or user == "":
            return "TARGETING_KEY_MISSING", "pass context.targetingKey: the user's key"
        if not isinstance(user, str):
            return "INVALID_CONTEXT", "context.targetingKey must be a string"
        pinned = ctx.get(CONTEXT_ATTRIBUTE)
        if pinned is not None and not isinstance(pinned, str):
            return "INVALID_CONTEXT", f"context.{CONTEXT_ATTRIBUTE} must be a string"
        return cls(user, pinned)


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={**_JSON, **(headers or {})})


async def _principal(
    keys: KeyCache,
    credentials: HTTPAuthorizationCredentials | None,
    api_key: str | None,
) -> Principal | JSONResponse:
    secret = (credentials.credentials if credentials is not None else None) or api_key
    if not secret:
        detail = "missing key: pass 'Authorization: Bearer <browser key>' or 'X-API-Key'"
        return _json(401, {"errorDetails": detail}, {"WWW-Authenticate": "Bearer"})
    principal = await keys.authenticate(secret)
    if principal is None:
        return _json(401, {"errorDetails": INVALID_TOKEN}, {"WWW-Authenticate": "Bearer"})
    if principal.app is None or not principal.can_evaluate_flags(principal.app):
        detail = (
            "OFREP evaluates one app's flags: use that app's browser key (or its sdk key on a"
            f" server), not a {principal.role} token"
        )
        return _json(403, {"errorDetails": detail})
    return principal


async def _answer(
    snapshots: SnapshotCache, request: Request, app: str, parsed: OfrepRequest
) -> dict[str, Any] | None:
    try:
        snapshot = (await snapshots.get(app)).snapshot
    except NotFound:
        return None
    return discover(
        snapshot, parsed.user, request.app.state.discovery, now=time.time(), context=parsed.context
    )


Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
ApiKey = Annotated[str | None, Depends(_api_key)]


@router.post(
    "/evaluate/flags/{key}",
    summary="OFREP: evaluate one flag for one user",
    openapi_extra=_REQUEST_BODY,
    responses={
        200: {"description": '`{"key", "value", "reason", "variant", "metadata"}`'},
        404: {
            "description": '`{"key", "errorCode": "FLAG_NOT_FOUND", "errorDetails"}`',
            **_OFREP_ERROR,
        },
        **_ERRORS,
    },
)
async def evaluate_flag(
    key: str,
    request: Request,
    snapshots: SnapshotsDep,
    keys: KeysDep,
    credentials: Bearer,
    api_key: ApiKey,
) -> Response:
    principal = await _principal(keys, credentials, api_key)
    if isinstance(principal, Response):
        return principal
    app = principal.app or ""
    parsed = OfrepRequest.parse(await request.body())
    if isinstance(parsed, tuple):
        code, details = parsed
        return _json(400, {"key": key, "errorCode": code, "errorDetails": details})
    answer = await _answer(snapshots, request, app, parsed)
    flag = ofrep_flag(answer, key) if answer is not None else None
    if answer is None or flag is None:
        flags = ", ".join(f["key"] for f in ofrep_flags(answer)) if answer else "none"
        details = f"no flag {key!r} for this key's app {app!r}; its flags: {flags}"
        return _json(404, {"key": key, "errorCode": "FLAG_NOT_FOUND", "errorDetails": details})
    return _json(200, flag)


@router.post(
    "/evaluate/flags",
    summary="OFREP: evaluate every flag of the key's app for one user",
    openapi_extra=_REQUEST_BODY,
    responses={
        200: {"description": '`{"flags": [...]}`, with a weak ETag header'},
        304: {"description": "If-None-Match matched: the flags have not changed"},
        **_ERRORS,
    },
)
async def evaluate_flags(
    request: Request,
    snapshots: SnapshotsDep,
    keys: KeysDep,
    credentials: Bearer,
    api_key: ApiKey,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    principal = await _principal(keys, credentials, api_key)
    if isinstance(principal, Response):
        return principal
    parsed = OfrepRequest.parse(await request.body())
    if isinstance(parsed, tuple):
        code, details = parsed
        return _json(400, {"errorCode": code, "errorDetails": details})
    answer = await _answer(snapshots, request, principal.app or "", parsed)
    content, etag = tagged({"flags": ofrep_flags(answer) if answer is not None else []})
    if etag_matches(if_none_match, etag.removeprefix("W/")):
        return Response(status_code=304, headers={"ETag": etag, **_JSON})
    return Response(content, media_type="application/json", headers={**_JSON, "ETag": etag})


for _path in ("/evaluate/flags", "/evaluate/flags/{key}"):
    router.add_api_route(_path, preflight, methods=["OPTIONS"], include_in_schema=False)
