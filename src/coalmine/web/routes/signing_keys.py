"""``GET /v1/signing-keys`` (admin only): the keyring the control plane made and stores, for
gateways and SDKs to verify the routing contexts discovery signs
(`coalmine.controller.signing_keys`).

Only an admin token reads it: whoever holds the keys can sign a context that puts
any user in any channel, so a viewer, a deployer, and above all a browser or sdk
key (which ship to clients and functions) never see them. A keyring the server
was given (``COALMINE_SIGNING_KEYS``) is the operator's already and is never
served: the answer is then a 404 that says so.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from coalmine.controller.schemas import SigningKeysRead
from coalmine.controller.signing_keys import StoredSigningKeys
from coalmine.controller.tokens import Principal
from coalmine.core.signing import Keyring
from coalmine.web.auth import Require
from coalmine.web.deps import PlaneDep
from coalmine.web.discovery import SIGNING_KEYS_ENV

__all__ = ["router"]

router = APIRouter(tags=["signing keys"])

Admin = Annotated[Principal, Depends(Require("admin", "read the signing keys"))]


@router.get(
    "/v1/signing-keys",
    summary="The stored signing keys of routing contexts, for gateways and SDKs (admin only)",
    responses={404: {"description": "this server's keys were given to it, not stored"}},
)
async def signing_keys(
    request: Request, response: Response, _: Admin, plane: PlaneDep
) -> SigningKeysRead:
    source = request.app.state.signing_keys_source
    if source != "store":
        raise HTTPException(
            404,
            f"this server signs with the keys in its {SIGNING_KEYS_ENV} (or given to"
            f" create_app): give gateways and SDKs that value"
            if source == "given"
            else "this server holds no signing keys",
        )
    spec = await run_in_threadpool(StoredSigningKeys(plane.store).read)
    if spec is None:  # pragma: no cover - the row is made before the app serves
        raise HTTPException(404, "this server holds no signing keys")
    response.headers["Cache-Control"] = "no-store"
    return SigningKeysRead(keys=spec, active=Keyring.parse(spec).active, env=SIGNING_KEYS_ENV)
