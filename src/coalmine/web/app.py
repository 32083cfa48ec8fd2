"""`create_app`: the control plane's FastAPI application and its lifespan.

The factory opens the store (migrations run there), builds the change feed,
the control and token services and the read path's caches (`SnapshotCache`,
`KeyCache`), and keeps them on ``app.state``. The lifespan starts the feed
(PostgreSQL LISTEN), then the caches, makes sure an admin token exists, and
optionally starts the rollout controller built by a factory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from starlette.concurrency import run_in_threadpool

from coalmine import __version__
from coalmine.controller.plane import ControlPlane
from coalmine.controller.signing_keys import StoredSigningKeys
from coalmine.controller.tokens import TokenService
from coalmine.core.ports import LambdaVersions
from coalmine.core.signing import Keyring
from coalmine.store.changes import ChangeFeed
from coalmine.store.db import Store, open_store
from coalmine.web.auth import bootstrap_admin
from coalmine.web.discovery import DiscoverySettings
from coalmine.web.docs_pages import OPENAPI, add_docs
from coalmine.web.errors import install_error_handlers
from coalmine.web.fast_reads import FastReads
from coalmine.web.key_cache import KeyCache
from coalmine.web.limits import BodyLimit
from coalmine.web.limits import max_body_bytes as body_limit
from coalmine.web.openapi import complete
from coalmine.web.query import known_query
from coalmine.web.routes import ROUTERS
from coalmine.web.routes.apply import openapi_schemas
from coalmine.web.snapshot_cache import SnapshotCache
from coalmine.web.ui import router as ui_router

__all__ = ["ControllerFactory", "create_app"]

log = logging.getLogger(__name__)
ControllerFactory = Callable[[ControlPlane, ChangeFeed], Any]
"""Builds the rollout controller: an object with ``start()`` and ``stop()``."""

_DESCRIPTION = (
    "The control plane of coalmine: apps, versions, releases that route users (not"
    " requests), their audit events, and each app's routing snapshot for the data plane"
    " (JSON with an ETag, or a Server-Sent Events stream). Authenticate with"
    " `Authorization: Bearer <token>`; docs/api.md says what each kind of token may call."
)


async def healthz() -> dict[str, str]:
    """Liveness: answers without a token."""
    return {"status": "ok"}


def create_app(
    store: Store | None = None,
    *,
    database_url: str | None = None,
    start_controller: bool = False,
    controller_factory: ControllerFactory | None = None,
    heartbeat: float = 15.0,
    signing_keys: Keyring | None = None,
    gateway_url: str | None = None,
    lambda_versions: LambdaVersions | None = None,
    max_body_bytes: int | None = None,
    public_docs: bool = False,
    stored_signing_keys: bool = True,
) -> FastAPI:
    """The control plane over ``store`` (or a store opened from ``database_url``).

    ``heartbeat`` is the seconds between ``: keepalive`` comments on idle
    routing streams. A store opened here is disposed of at shutdown; a store
    passed in belongs to the caller. ``signing_keys`` (else
    ``COALMINE_SIGNING_KEYS``, else, with ``stored_signing_keys``, the keyring kept
    in the store, made on the first start: `coalmine.controller.signing_keys`)
    sign the routing context of discovery answers;
    ``gateway_url`` (else ``COALMINE_GATEWAY_URL``) is where they send calls to
    versions whose target is not a URL. ``lambda_versions`` lists the published
    versions of Lambda functions (default: AWS, from the standard AWS chain).
    ``max_body_bytes`` (else
    ``COALMINE_MAX_BODY_BYTES``, else 4 MiB) is the largest request body read
    (`coalmine.web.limits`). ``/openapi.json``, ``/docs`` and
    ``/redoc`` need a viewer token unless ``public_docs``.
    """
    if heartbeat <= 0:
        raise ValueError("heartbeat must be a positive number of seconds")
    limit = body_limit(max_body_bytes)
    discovery = DiscoverySettings.load(signing_keys, gateway_url)
    owns_store = store is None
    store = store if store is not None else open_store(database_url)
    source, made = ("given" if discovery.keyring is not None else None), False
    if discovery.keyring is None and stored_signing_keys:
        keyring, made = StoredSigningKeys(store).load_or_create(time.time())
        discovery = DiscoverySettings(keyring, discovery.gateway_url)
        source = "store"
    feed = ChangeFeed(store)
    plane = ControlPlane(store, feed, lambda_versions=lambda_versions)
    tokens = TokenService(store)
    snapshots = SnapshotCache(plane.snapshots, feed)  # subscribed before anything is read
    keys = KeyCache(tokens)

    entered = 0

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Two servers (or test clients) on one app share what the first one started:
        # the caches' tasks live on its event loop, and only it may stop them.
        nonlocal entered
        entered += 1
        if entered > 1:
            try:
                yield
            finally:
                entered -= 1
            return
        try:
            async with _running() as ready:
                yield ready
        finally:
            entered -= 1

    @asynccontextmanager
    async def _running() -> AsyncIterator[None]:
        await run_in_threadpool(feed.start)
        snapshots.start()
        keys.start()
        controller: Any = None
        try:
            await run_in_threadpool(bootstrap_admin, tokens)
            if start_controller and controller_factory is not None:
                controller = controller_factory(plane, feed)
                await run_in_threadpool(controller.start)
            elif start_controller:
                log.warning("start_controller without a controller_factory: no rollout controller")
            app.state.controller = controller
            yield
        finally:
            if controller is not None:
                await run_in_threadpool(controller.stop)
            await keys.stop()
            await snapshots.stop()
            await run_in_threadpool(feed.stop)
            if owns_store:
                store.dispose()

    app = FastAPI(
        title="coalmine control plane",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        dependencies=[Depends(known_query)],
        # FastAPI serves its document to anyone, and its pages with scripts from a CDN:
        # add_docs serves the pages (from local assets) and, unless public, the document
        openapi_url=OPENAPI if public_docs else None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.store = store
    app.state.feed = feed
    app.state.plane = plane
    app.state.tokens = tokens
    app.state.snapshots = snapshots
    app.state.keys = keys
    app.state.heartbeat = heartbeat
    app.state.discovery = discovery
    # "given" (an argument, COALMINE_SIGNING_KEYS), "store" (made on a first start) or None
    app.state.signing_keys_source = source
    # True in the one start that made the stored keyring: the one that says how to share it
    app.state.signing_keys_made = made
    app.state.controller = None
    install_error_handlers(app)
    app.add_middleware(FastReads)  # the polled reads, inside the body limit
    app.add_middleware(BodyLimit, max_bytes=limit)  # outside routing: before auth and parsing
    app.add_api_route("/healthz", healthz, methods=["GET"], tags=["health"])
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(ui_router)  # the dashboard (docs/ui.md), outside the OpenAPI document
    _add_schemas(app)
    add_docs(app, public=public_docs)
    return app


def _add_schemas(app: FastAPI) -> None:
    """Add the schemas of bodies FastAPI does not parse itself (the apply document), then
    what the handlers answer besides (`coalmine.web.openapi`)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, part in openapi_schemas().items():
            components.setdefault(name, part)
        app.openapi_schema = complete(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
