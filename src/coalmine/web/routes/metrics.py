"""Per-version metrics: ``POST /v1/metrics`` ingests a batch, ``GET /metrics`` serves Prometheus.

A batch (`MetricsBatch`) holds the deltas an SDK or a gateway recorded for
one app, in time windows; it is written with the sdk key of that app or a
deployer (or admin) token. ``GET /metrics`` answers without a token, as
Prometheus scrapes: the cumulative counts this control-plane process has
ingested, per app, function, version and channel; the exposure and the
judge's latest verdict of every active release; and the analysis runs the
store holds per app and verdict. See docs/metrics.md.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Response

from coalmine.controller.plane import ControlPlane
from coalmine.controller.schemas import MetricsBatch, MetricsIngestRead
from coalmine.controller.tokens import Principal
from coalmine.core.bucketing import BUCKETS
from coalmine.core.verdict import Outcome
from coalmine.metrics.exposition import (
    FunctionCollector,
    RecorderCollector,
    Sample,
    deprecated_names,
    registry,
    render,
)
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


def _release_collectors(plane: ControlPlane, *, deprecated: bool) -> list[FunctionCollector]:
    """Exposure and the judge's latest verdict of each active release; runs per verdict."""
    active = plane.releases.all_active()
    latest = plane.runs.last_of([r.id for r in active])

    def verdicts() -> list[Sample]:
        out: list[Sample] = []
        for r in active:
            run = latest.get(r.id)
            if run is not None:
                out += [((r.app, r.id, str(v)), float(run.outcome is v)) for v in Outcome]
        return out

    collectors = [
        FunctionCollector(
            "coalmine_release_exposure_ratio",
            "Share of users in the canary channel of an active release (0-1).",
            ("app", "release"),
            lambda: [((r.app, r.id), r.exposure / BUCKETS) for r in active],
        ),
        FunctionCollector(
            "coalmine_release_verdict",
            "The verdict of the latest analysis run of an active release: 1 for the verdict"
            " it has, 0 for the others (pass, fail, inconclusive).",
            ("app", "release", "verdict"),
            verdicts,
        ),
        FunctionCollector(
            "coalmine_analysis_runs",
            "Analysis runs (one per interval the judge looked at a release) the store holds,"
            " per app and verdict: the same on every replica.",
            ("app", "verdict"),
            lambda: [((app, str(v)), float(n)) for app, v, n in plane.runs.counts()],
            counter=True,
        ),
    ]
    if deprecated:
        collectors.append(
            FunctionCollector(
                "coalmine_release_exposure",
                "Deprecated: coalmine_release_exposure_ratio in basis points (0-10000);"
                " removed in the next release.",
                ("app", "release"),
                lambda: [((r.app, r.id), float(r.exposure)) for r in active],
            )
        )
    return collectors


@router.get(
    "/metrics",
    summary="Prometheus exposition: ingested per-version metrics, active releases, verdicts",
    response_class=Response,
    responses=_EXPOSITION_DOC,
)
def metrics(
    plane: PlaneDep, _: Scraper, accept: Annotated[str | None, Header()] = None
) -> Response:
    deprecated = deprecated_names()
    body, content_type = render(
        registry(
            RecorderCollector(plane.metrics.ingested, deprecated=deprecated),
            *_release_collectors(plane, deprecated=deprecated),
        ),
        accept,
    )
    return Response(body, media_type=content_type)
