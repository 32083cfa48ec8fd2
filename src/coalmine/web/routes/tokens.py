"""API tokens and sdk keys (admin only): create (the secret is shown once), list, revoke."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from coalmine.controller.schemas import TokenCreate, TokenCreated, TokenRead
from coalmine.controller.tokens import Principal
from coalmine.web.auth import Require
from coalmine.web.deps import TokensDep

__all__ = ["router"]

router = APIRouter(prefix="/v1/tokens", tags=["tokens"])

TOKEN_ID_MAX = 2**31 - 1
"""token ids are a 32-bit column on PostgreSQL: a larger id names no token (and made a 500)"""
Admin = Annotated[Principal, Depends(Require("admin", "manage tokens"))]


@router.post("", status_code=201, summary="Create a token; its secret is shown only in this answer")
def create_token(body: TokenCreate, _: Admin, tokens: TokensDep) -> TokenCreated:
    return tokens.create(body.name, body.role, body.app)


@router.get("", summary="List tokens (never their secrets)")
def list_tokens(_: Admin, tokens: TokensDep) -> list[TokenRead]:
    return tokens.list()


@router.delete(
    "/{token_id}",
    status_code=204,
    summary="Revoke a token at once",
    responses={409: {"description": "the last admin token cannot be revoked"}},
)
def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=TOKEN_ID_MAX)], _: Admin, tokens: TokensDep
) -> Response:
    tokens.revoke(token_id)
    return Response(status_code=204)
