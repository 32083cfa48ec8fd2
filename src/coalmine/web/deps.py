"""Typed access to what `create_app` keeps on ``app.state``, as FastAPI dependencies."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from coalmine.controller.plane import ControlPlane
from coalmine.controller.tokens import TokenService
from coalmine.store.changes import ChangeFeed
from coalmine.web.key_cache import KeyCache
from coalmine.web.snapshot_cache import SnapshotCache

__all__ = [
    "FeedDep",
    "KeysDep",
    "PlaneDep",
    "SnapshotsDep",
    "TokensDep",
    "get_feed",
    "get_keys",
    "get_plane",
    "get_snapshots",
    "get_tokens",
]


async def get_plane(request: Request) -> ControlPlane:
    return cast(ControlPlane, request.app.state.plane)


async def get_tokens(request: Request) -> TokenService:
    return cast(TokenService, request.app.state.tokens)


async def get_feed(request: Request) -> ChangeFeed:
    return cast(ChangeFeed, request.app.state.feed)


async def get_keys(request: Request) -> KeyCache:
    return cast(KeyCache, request.app.state.keys)


async def get_snapshots(request: Request) -> SnapshotCache:
    return cast(SnapshotCache, request.app.state.snapshots)


PlaneDep = Annotated[ControlPlane, Depends(get_plane)]
TokensDep = Annotated[TokenService, Depends(get_tokens)]
FeedDep = Annotated[ChangeFeed, Depends(get_feed)]
KeysDep = Annotated[KeyCache, Depends(get_keys)]
SnapshotsDep = Annotated[SnapshotCache, Depends(get_snapshots)]
