"""The REST routes, one module per resource; `ROUTERS` lists them for `create_app`."""

from __future__ import annotations

from fastapi import APIRouter

from coalmine.web.routes import (
    alarms,
    apply,
    apps,
    discovery,
    events,
    metrics,
    ofrep,
    releases,
    routing,
    signing_keys,
    tokens,
)

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = (
    apps.router,
    apply.router,
    releases.router,
    events.router,
    routing.router,
    tokens.router,
    signing_keys.router,
    discovery.router,
    ofrep.router,
    metrics.router,
    alarms.router,
)
