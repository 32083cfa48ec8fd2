"""The audit log: events of every app and release, filtered and paged by id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from coalmine.controller.schemas import EventRead
from coalmine.controller.tokens import Principal
from coalmine.core.wire import MAX_INT
from coalmine.web.auth import Require
from coalmine.web.deps import PlaneDep

__all__ = ["router"]

router = APIRouter(tags=["events"])

Viewer = Annotated[Principal, Depends(Require("viewer", "read events"))]


@router.get("/v1/events", summary="Audit events, oldest first; page with ?after=<last id>")
def list_events(
    _: Viewer,
    plane: PlaneDep,
    app: Annotated[str | None, Query(description="only this app's events")] = None,
    release: Annotated[str | None, Query(description="only this release's events")] = None,
    after: Annotated[int, Query(ge=0, le=MAX_INT, description="only events with a larger id")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[EventRead]:
    return [
        EventRead.of(e)
        for e in plane.audit.events(app=app, release_id=release, after=after, limit=limit)
    ]
