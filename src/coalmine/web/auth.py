"""Who is calling: bearer-token authentication, role checks, and the admin bootstrap.

Every route but ``/healthz`` needs ``Authorization: Bearer <token>`` (and
``/docs``, ``/openapi.json`` unless the docs are made public). Roles nest
(admin ⊇ deployer ⊇ viewer); the narrow keys do one job each: an sdk key is
one app's server credential, a browser key one app's public key for
discovery and OFREP, a scraper token reads ``/metrics``. The policy is
`Principal`'s ``can_*`` methods; docs/api.md has it as a table.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Annotated, TextIO

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from coalmine.controller.schemas import Role, TokenCreated
from coalmine.controller.tokens import Principal, TokenService
from coalmine.web.deps import KeysDep

__all__ = [
    "BOOTSTRAP_ENV",
    "INVALID_TOKEN",
    "MISSING_TOKEN",
    "Caller",
    "Require",
    "RoutingReader",
    "Scraper",
    "authenticate",
    "bootstrap_admin",
    "browser_key_hint",
    "routing_reader",
    "scraper",
]

log = logging.getLogger(__name__)
BOOTSTRAP_ENV = "COALMINE_BOOTSTRAP_TOKEN"
MISSING_TOKEN = "missing bearer token: pass --token or set COALMINE_TOKEN"
INVALID_TOKEN = "invalid or revoked token"

_bearer = HTTPBearer(
    auto_error=False,
    description="An API token (`cm_...`), an app's sdk key (`cmsdk_...`) or browser key"
    " (`cmpub_...`): see docs/api.md for what each may call.",
)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


async def authenticate(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    keys: KeysDep,
) -> Principal:
    """The caller's principal; 401 when the bearer token is missing, unknown or revoked.

    Checked through the `KeyCache`: a revoked token stops working within
    `coalmine.web.key_cache.MAX_AGE_SECONDS`, at once when revoked here.
    """
    if credentials is None or not credentials.credentials:
        raise _unauthorized(MISSING_TOKEN)
    principal = await keys.authenticate(credentials.credentials)
    if principal is None:
        raise _unauthorized(INVALID_TOKEN)
    return principal


Caller = Annotated[Principal, Depends(authenticate)]


class Require:
    """A dependency that lets through callers whose role includes ``role`` (else 403)."""

    def __init__(self, role: Role, action: str) -> None:
        self.role = role
        self.action = action

    async def __call__(self, principal: Caller) -> Principal:
        if not principal.has_role(self.role):
            raise HTTPException(
                403, f"role {principal.role} cannot {self.action}; needs {self.role}"
            )
        return principal


def browser_key_hint(app: str | None) -> str:
    """What to do with a browser key where it cannot go."""
    return (
        "a browser key is public (it ships in web pages): it asks discovery and OFREP for one"
        " user, nothing else; servers use the app's sdk key"
        + (f" (coalmine token create --name NAME --role sdk --app {app})" if app else "")
    )


async def routing_reader(app: str, principal: Caller) -> Principal:
    """A viewer (or better), or the sdk key of ``app``: the readers of its routing."""
    if principal.can_read_routing(app):
        return principal
    if principal.role == "sdk":
        raise HTTPException(
            403,
            f"this sdk key reads only the routing of app {principal.app!r}, not {app!r};"
            f" use the sdk key of {app!r} or a viewer token",
        )
    if principal.role == "browser":
        raise HTTPException(
            403, f"a browser key cannot read the routing snapshot; {browser_key_hint(app)}"
        )
    raise HTTPException(403, f"role {principal.role} cannot read routing; needs viewer")


RoutingReader = Annotated[Principal, Depends(routing_reader)]


async def scraper(principal: Caller) -> Principal:
    """A scraper token or a viewer (or better): the readers of ``GET /metrics``."""
    if principal.can_scrape():
        return principal
    raise HTTPException(
        403,
        f"role {principal.role} cannot read /metrics; needs a scraper token"
        " (coalmine token create --name prometheus --role scraper) or a viewer token",
    )


Scraper = Annotated[Principal, Depends(scraper)]


def bootstrap_admin(
    tokens: TokenService,
    env: Mapping[str, str] | None = None,
    out: TextIO | None = None,
) -> TokenCreated | None:
    """Make sure an admin token exists (see `TokenService.bootstrap`).

    A generated secret is printed once to stderr; a secret taken from
    ``COALMINE_BOOTSTRAP_TOKEN`` is never printed.
    """
    env = os.environ if env is None else env
    secret = env.get(BOOTSTRAP_ENV) or None
    created = tokens.bootstrap(secret)
    if created is None:
        return None
    if created.token == secret:
        log.info("created admin token %r from %s", created.name, BOOTSTRAP_ENV)
    else:
        print(
            f"coalmine: created admin token {created.token} (name {created.name!r});"
            " it is shown only once",
            file=out or sys.stderr,
            flush=True,
        )
    return created
