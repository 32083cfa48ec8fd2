"""Typed access to what `create_app` keeps on ``app.state``, as FastAPI dependencies."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from coalmine.controller.plane import ControlPlane
from coalmine.controller.tokens import TokenService
from coalmine.store.changes import ChangeFeed

__all__ = ["FeedDep", "PlaneDep", "TokensDep", "get_feed", "get_plane", "get_tokens"]


async def get_plane(request: Request) -> ControlPlane:
    return cast(ControlPlane, request.app.state.plane)


async def get_tokens(request: Request) -> TokenService:
    return cast(TokenService, request.app.state.tokens)


async def get_feed(request: Request) -> ChangeFeed:
    return cast(ChangeFeed, request.app.state.feed)


PlaneDep = Annotated[ControlPlane, Depends(get_plane)]
TokensDep = Annotated[TokenService, Depends(get_tokens)]
FeedDep = Annotated[ChangeFeed, Depends(get_feed)]
