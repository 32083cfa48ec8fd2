"""The dashboard's routes: the public shell and assets, and the viewer's fragments."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from coalmine.controller.plane import ControlPlane
from coalmine.controller.schemas import AnalysisRunRead, EventRead, ReleaseRead
from coalmine.controller.tokens import Principal
from coalmine.metrics.recorder import DEFAULT_WINDOW
from coalmine.web.auth import Require
from coalmine.web.deps import PlaneDep
from coalmine.web.ui.assets import CSP, SCRIPT, SHELL, STYLE
from coalmine.web.ui.views import (
    CHARTED_FUNCTIONS,
    VersionSeries,
    apps_fragment,
    release_fragment,
)

__all__ = ["router"]

router = APIRouter(prefix="/ui", include_in_schema=False)
Viewer = Annotated[Principal, Depends(Require("viewer", "read the dashboard"))]
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}
_MAX_ROWS = 1000  # events and analysis runs shown on one release page
_SPAN = 3600.0  # seconds of per-version metrics charted: the release's last hour
_BINS = 60  # points per chart line at most


def _html(body: str) -> HTMLResponse:
    return HTMLResponse(body, headers=_HEADERS)


@router.get("")
def shell() -> HTMLResponse:
    """The page: no data in it, so anyone may load it."""
    return _html(SHELL)


@router.get("/ui.js")
def script() -> Response:
    return Response(SCRIPT, media_type="text/javascript", headers=_HEADERS)


@router.get("/ui.css")
def style() -> Response:
    return Response(STYLE, media_type="text/css", headers=_HEADERS)


def _apps(plane: ControlPlane) -> str:
    apps = plane.catalog.list_apps()
    active = {
        a.active_release: ReleaseRead.of(plane.releases.get(a.active_release))
        for a in apps
        if a.active_release
    }
    return apps_fragment(apps, active)


def _release(plane: ControlPlane, release_id: str) -> str:
    rel = ReleaseRead.of(plane.releases.get(release_id))
    events = [EventRead.of(e) for e in plane.audit.events(release_id=rel.id, limit=_MAX_ROWS)]
    runs = [AnalysisRunRead.of(r) for r in plane.runs.of_release(rel.id, limit=_MAX_ROWS)]
    now = time.time()
    until = max(rel.finished_at or now, rel.created_at) + 1
    since = max(rel.created_at - DEFAULT_WINDOW, until - _SPAN)  # the window it started in
    series = _series(plane, rel, since, until)
    return release_fragment(rel, events, runs, now, series, (since, until))


def _series(plane: ControlPlane, rel: ReleaseRead, since: float, until: float) -> VersionSeries:
    """Each charted function's canary and stable versions from ``since`` to ``until``."""
    keys: list[tuple[str, str]] = []
    queries: list[tuple[str, str, str]] = []
    for fn in sorted(rel.candidate)[:CHARTED_FUNCTIONS]:
        for channel, version in (("canary", rel.candidate[fn]), ("stable", rel.baseline.get(fn))):
            if version is not None:
                keys.append((fn, channel))
                queries.append((fn, version, channel))
    found = plane.metrics.over_time(rel.app, queries, since=since, until=until, bins=_BINS)
    return dict(zip(keys, found, strict=True))


@router.get("/fragments/apps")
async def apps(_: Viewer, plane: PlaneDep) -> HTMLResponse:
    return _html(await run_in_threadpool(_apps, plane))


@router.get("/fragments/releases/{release_id}")
async def release(release_id: str, _: Viewer, plane: PlaneDep) -> HTMLResponse:
    return _html(await run_in_threadpool(_release, plane, release_id))
