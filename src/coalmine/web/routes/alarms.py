"""Alarms and analysis: raise an alarm, read an app's alarms and a release's analysis runs.

``POST /v1/alarms`` takes either body shape of `coalmine.controller.alarms.parse_notice`
(a simple ``{"app", "name", "state", "reason"}`` or a CloudWatch alarm's SNS
notification, sent as any content type: SNS posts ``text/plain``). The app
is ``?app=``, the simple body's ``app``, or the alarm name
``coalmine:<app>:<name>``. A malformed body is a 400 naming the problem, and
nothing is written.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from coalmine.controller.alarm_notice import parse_notice
from coalmine.controller.schemas import AlarmHandled, AlarmRead, AnalysisRunRead
from coalmine.controller.tokens import Principal
from coalmine.core.errors import NotFound
from coalmine.core.wire import MAX_INT
from coalmine.web.auth import Require
from coalmine.web.deps import PlaneDep

__all__ = ["MAX_ALARM_BYTES", "router"]

router = APIRouter(tags=["alarms"])

MAX_ALARM_BYTES = 256 * 1024
"""SNS messages are at most 256 KiB"""

Raiser = Annotated[Principal, Depends(Require("deployer", "raise alarms"))]
Viewer = Annotated[Principal, Depends(Require("viewer", "read alarms and analysis"))]
_EXAMPLE = {"app": "shop", "name": "p99-latency", "state": "ALARM", "reason": "p99 > 500 ms"}
_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            'a simple body {"app", "name", "state": "ALARM"|"OK", "reason"}, or an SNS'
            " notification whose Message is a CloudWatch alarm's JSON (AlarmName,"
            " NewStateValue, NewStateReason); the app may instead be ?app= or the alarm"
            " name coalmine:<app>:<name>"
        ),
        "content": {
            "application/json": {"schema": {"type": "object"}, "example": _EXAMPLE},
            "text/plain": {"schema": {"type": "string"}},
        },
    }
}


async def _read_body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_ALARM_BYTES:
            raise HTTPException(413, f"an alarm body is at most {MAX_ALARM_BYTES // 1024} KiB")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/v1/alarms",
    summary="Raise (or clear) an alarm; firing during a release rolls it back at once",
    openapi_extra=_BODY_DOC,
    responses={
        400: {"description": "a malformed body (the detail says what is wrong)"},
        404: {"description": "no such app"},
    },
)
async def raise_alarm(
    request: Request,
    who: Raiser,
    plane: PlaneDep,
    app: Annotated[
        str | None, Query(description="the app, unless the name is coalmine:<app>:<name>")
    ] = None,
) -> AlarmHandled:
    notice = parse_notice(await _read_body(request), app=app)
    return await run_in_threadpool(
        plane.alarms.raise_alarm, notice.app, notice.name, notice.state, notice.reason, who.name
    )


@router.get("/v1/apps/{app}/alarms", summary="An app's alarms and their last state")
def list_alarms(app: str, _: Viewer, plane: PlaneDep) -> list[AlarmRead]:
    return [AlarmRead.of(a) for a in plane.alarms.of_app(app)]


@router.get(
    "/v1/releases/{release_id}/analysis",
    summary="A release's analysis runs (verdicts, alarms, actions), oldest first",
)
def release_analysis(
    release_id: str,
    _: Viewer,
    plane: PlaneDep,
    after: Annotated[int, Query(ge=0, le=MAX_INT, description="only runs with a larger id")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AnalysisRunRead]:
    return [
        AnalysisRunRead.of(r) for r in plane.runs.of_release(release_id, after=after, limit=limit)
    ]


@router.get(
    "/v1/releases/{release_id}/analysis/latest",
    summary="A release's latest analysis run (404 before its first)",
)
def latest_analysis(release_id: str, _: Viewer, plane: PlaneDep) -> AnalysisRunRead:
    plane.releases.get(release_id)  # an unknown release is a 404 that says so
    run = plane.runs.last(release_id)
    if run is None:
        raise NotFound(f"release {release_id} has no analysis run yet")
    return AnalysisRunRead.of(run)
