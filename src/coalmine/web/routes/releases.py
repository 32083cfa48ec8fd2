"""Releases: start, read, list, their events, and the operator's promote/rollback/pause/resume."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query

from coalmine.controller.schemas import EventRead, OperateRequest, ReleaseCreate, ReleaseRead
from coalmine.controller.tokens import Principal
from coalmine.core.machine import Command
from coalmine.core.wire import MAX_INT
from coalmine.web.auth import Require
from coalmine.web.deps import PlaneDep

__all__ = ["router"]

router = APIRouter(tags=["releases"])

Viewer = Annotated[Principal, Depends(Require("viewer", "read releases"))]
Starter = Annotated[Principal, Depends(Require("deployer", "start releases"))]
Operator = Annotated[Principal, Depends(Require("deployer", "operate releases"))]
OptionalOperate = Annotated[OperateRequest | None, Body()]
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "the release's phase does not allow this operation"}
}


@router.get("/v1/apps/{app}/releases", summary="List an app's releases, newest first")
def list_releases(
    app: str,
    _: Viewer,
    plane: PlaneDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[ReleaseRead]:
    return [ReleaseRead.of(r) for r in plane.releases.recent(app, limit=limit)]


@router.post(
    "/v1/apps/{app}/releases",
    status_code=201,
    summary="Start a release (409 while another release of the app is active)",
    responses={409: {"description": "the app already has an active release"}},
)
def start_release(app: str, body: ReleaseCreate, who: Starter, plane: PlaneDep) -> ReleaseRead:
    return ReleaseRead.of(plane.releases.start(app, body, who.name))


@router.get("/v1/releases/{release_id}", summary="Read a release")
def get_release(release_id: str, _: Viewer, plane: PlaneDep) -> ReleaseRead:
    return ReleaseRead.of(plane.releases.get(release_id))


@router.get("/v1/releases/{release_id}/events", summary="A release's audit events, oldest first")
def release_events(
    release_id: str,
    _: Viewer,
    plane: PlaneDep,
    after: Annotated[int, Query(ge=0, le=MAX_INT, description="only events with a larger id")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[EventRead]:
    return [
        EventRead.of(e) for e in plane.audit.events(release_id=release_id, after=after, limit=limit)
    ]


_OPERATIONS = {
    Command.PROMOTE: "Promote now",
    Command.ROLLBACK: "Roll back now",
    Command.PAUSE: "Pause a running or promoting release",
    Command.RESUME: "Resume a paused release",
}


def _register_operation(command: Command, summary: str) -> None:
    def operate(
        release_id: str, who: Operator, plane: PlaneDep, body: OptionalOperate = None
    ) -> ReleaseRead:
        done = plane.releases.operate(release_id, command, who.name, body.reason if body else "")
        return ReleaseRead.of(done)

    operate.__name__ = str(command)
    router.post(f"/v1/releases/{{release_id}}/{command}", summary=summary, responses=_CONFLICT)(
        operate
    )


for _command, _summary in _OPERATIONS.items():
    _register_operation(_command, _summary)
