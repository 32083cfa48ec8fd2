"""Per-version metrics: ``POST /v1/metrics`` ingests a batch, ``GET /metrics`` serves Prometheus.

A batch (`MetricsBatch`) holds the deltas an SDK or a gateway recorded for
one app, in time windows; it is written with the sdk key of that app or a
deployer (or admin) token. ``GET /metrics`` answers without a token, as
Prometheus scrapes: the cumulative counts this control-plane process has
ingested, per app, function, version and channel, and the exposure of every
active release. See docs/metrics.md.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Response

from coalmine.controller.plane import ControlPlane
from coalmine.controller.schemas import MetricsBatch, MetricsIngestRead
from coalmine.controller.tokens import Principal
from coalmine.metrics.exposition import FunctionCollector, RecorderCollector, registry, render
from coalmine.web.auth import Caller, Scraper
from coalmine.web.deps import PlaneDep

__all__ = ["router"]

router = APIRouter(tags=["metrics"])

_EXPOSITION_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text exposition (OpenMetrics when the Accept header asks)",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}


def _check_writer(principal: Principal, app: str) -> None:
    """The sdk key of ``app``, or a deployer (or admin) token; else 403 saying which."""
    if principal.role == "sdk":
        if principal.app == app:
            return
        raise HTTPException(
            403,
            f"this sdk key sends only the metrics of app {principal.app!r}, not {app!r};"
            f" use the sdk key of {app!r} or a deployer token",
        )
    if not principal.has_role("deployer"):
        raise HTTPException(
            403,
            f"role {principal.role} cannot send metrics; needs deployer or the sdk key of the app",
        )


@router.post(
    "/v1/metrics",
    summary="Merge a batch of per-version metric windows into the store",
    responses={400: {"description": "a window is invalid (it is named); nothing was written"}},
)
def ingest_metrics(batch: MetricsBatch, principal: Caller, plane: PlaneDep) -> MetricsIngestRead:
    _check_writer(principal, batch.app)
    merged = plane.metrics.ingest(batch.app, batch, principal.name)
    return MetricsIngestRead(app=batch.app, merged=merged)


def _exposure(plane: ControlPlane) -> FunctionCollector:
    return FunctionCollector(
        "coalmine_release_exposure",
        "Share of users in the canary channel of an active release, in basis points (0-10000).",
        ("app", "release"),
        lambda: [((r.app, r.id), float(r.exposure)) for r in plane.releases.all_active()],
    )


@router.get(
    "/metrics",
    summary="Prometheus exposition: ingested per-version metrics, exposure of active releases",
    response_class=Response,
    responses=_EXPOSITION_DOC,
)
def metrics(
    plane: PlaneDep, _: Scraper, accept: Annotated[str | None, Header()] = None
) -> Response:
    body, content_type = render(
        registry(RecorderCollector(plane.metrics.ingested), _exposure(plane)), accept
    )
    return Response(body, media_type=content_type)
