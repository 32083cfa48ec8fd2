"""Typed access to what `create_app` keeps on ``app.state``, as FastAPI dependencies."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from coalmine.controller.service import ControlService
from coalmine.controller.tokens import TokenService
from coalmine.store.changes import ChangeFeed

__all__ = ["FeedDep", "ServiceDep", "TokensDep", "get_feed", "get_service", "get_tokens"]


async def get_service(request: Request) -> ControlService:
    return cast(ControlService, request.app.state.service)


async def get_tokens(request: Request) -> TokenService:
    return cast(TokenService, request.app.state.tokens)


async def get_feed(request: Request) -> ChangeFeed:
    return cast(ChangeFeed, request.app.state.feed)


ServiceDep = Annotated[ControlService, Depends(get_service)]
TokensDep = Annotated[TokenService, Depends(get_tokens)]
FeedDep = Annotated[ChangeFeed, Depends(get_feed)]
