"""API tokens and SDK keys: create, authenticate, list, revoke (stored only as hashes).

A secret is shown once, when it is created; the store keeps its SHA-256 (hex)
and its first characters (to recognise it in listings), never the secret.
Roles nest: admin ⊇ deployer ⊇ viewer. Three narrow keys stand outside that
ladder: an ``sdk`` key is the server credential of one app's SDKs and
gateways (its routing, discovery, OFREP, metrics writes); a ``browser`` key is
the public key of one app's web pages (discovery for one user at a time, and
OFREP); a ``scraper`` token reads ``GET /metrics`` only. `Principal`'s
``can_*`` methods are the policy of the reads (``POST /v1/metrics`` checks
its writer in its route: the app's sdk key or a deployer); docs/api.md's
table states the whole policy and tests/web/test_keys.py checks that the
server agrees with it.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import cast, get_args

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from coalmine.controller.schemas import Role, TokenCreated, TokenRead
from coalmine.core.errors import Conflict, InvalidInput, NotFound
from coalmine.store.db import Store
from coalmine.store.models import AppRow, TokenRow

__all__ = [
    "APP_ROLES",
    "BOOTSTRAP_NAME",
    "MAX_SECRET_CHARS",
    "ROLES",
    "Principal",
    "TokenService",
    "generate_secret",
    "hash_secret",
]

log = logging.getLogger(__name__)
ROLES: tuple[Role, ...] = get_args(Role)
BOOTSTRAP_NAME = "bootstrap"
_RANK: dict[str, int] = {"viewer": 1, "deployer": 2, "admin": 3}
APP_ROLES: frozenset[str] = frozenset({"sdk", "browser"})
"""roles whose keys belong to one app"""
_PREFIXES: dict[str, str] = {"sdk": "cmsdk_", "browser": "cmpub_"}
_PREFIX_CHARS = 12
_MIN_SECRET_CHARS = 16
MAX_SECRET_CHARS = 512
_IN_CHUNK = 500
"""hashes per ``IN (...)``: within every SQLite's limit of bound parameters"""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: the token's name, role and (for an sdk or browser key) app."""

    name: str
    role: Role
    app: str | None = None

    def has_role(self, role: Role) -> bool:
        """True when this principal's role includes ``role``.

        The ladder is admin ⊇ deployer ⊇ viewer; the narrow keys (sdk, browser,
        scraper) include only themselves.
        """
        if role not in _RANK:
            return self.role == role
        return _RANK.get(self.role, 0) >= _RANK[role]

    def _own(self, role: Role, app: str) -> bool:
        return self.role == role and self.app == app

    def can_read_routing(self, app: str) -> bool:
        """The routing snapshot and stream (salt, testers, every target): the app's sdk key or
        a viewer. Never a browser key: a page's key is public."""
        return self._own("sdk", app) or self.has_role("viewer")

    def can_discover(self, app: str) -> bool:
        """Discovery for one user: the app's browser or sdk key, or a viewer."""
        return self._own("browser", app) or self.can_read_routing(app)

    def can_discover_many(self, app: str) -> bool:
        """Discovery for many users at once (the batch): what may read the routing."""
        return self.can_read_routing(app)

    def can_evaluate_flags(self, app: str) -> bool:
        """OFREP: the app's browser or sdk key (the key names the app the flags are of)."""
        return self._own("browser", app) or self._own("sdk", app)

    def can_scrape(self) -> bool:
        """``GET /metrics``: a scraper token or a viewer."""
        return self.role == "scraper" or self.has_role("viewer")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def generate_secret(role: Role) -> str:
    """A new random secret: ``cmsdk_...`` for sdk keys, ``cmpub_...`` for browser keys,
    ``cm_...`` otherwise."""
    return _PREFIXES.get(role, "cm_") + secrets.token_urlsafe(32)


class TokenService:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.on_revoke: list[Callable[[str], None]] = []
        """told the hash of each token this service revokes, once committed (a cache
        forgets it at once; other processes find out by asking the store)"""

    def create(
        self, name: str, role: str, app: str | None = None, secret: str | None = None
    ) -> TokenCreated:
        """Create a token; the returned secret is the only time it is shown."""
        name = name.strip()
        if not name or len(name) > 120:
            raise InvalidInput("a token needs a name of 1-120 characters (who or what uses it)")
        if role not in ROLES:
            raise InvalidInput(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
        typed_role: Role = role
        if typed_role in APP_ROLES and not app:
            article = "an" if typed_role == "sdk" else "a"
            raise InvalidInput(f"{article} {role} key belongs to one app: pass the app it may read")
        if typed_role not in APP_ROLES and app:
            raise InvalidInput(
                f"only sdk and browser keys belong to an app; a {role} token works on every app"
                " (drop the app)"
            )
        if secret is None:
            secret = generate_secret(typed_role)
        elif not _MIN_SECRET_CHARS <= len(secret) <= MAX_SECRET_CHARS or not secret.isprintable():
            raise InvalidInput(
                f"a token secret must be {_MIN_SECRET_CHARS}-{MAX_SECRET_CHARS} printable"
                " characters; generate one with: python -c 'import secrets;"
                ' print("cm_" + secrets.token_urlsafe(32))\''
            )
        digest = hash_secret(secret)
        try:
            with self.store.transaction() as s:
                if (
                    app is not None
                    and s.scalar(select(AppRow.id).where(AppRow.name == app)) is None
                ):
                    raise NotFound(f"no app named {app!r}: create or apply the app first")
                if s.scalar(select(TokenRow.id).where(TokenRow.hash == digest)) is not None:
                    raise Conflict("a token with this secret already exists; use another secret")
                row = TokenRow(
                    name=name,
                    role=role,
                    app=app,
                    prefix=secret[:_PREFIX_CHARS],
                    hash=digest,
                    created_at=self.clock(),
                )
                s.add(row)
                s.flush()
                read = _token_read(row)
        except IntegrityError:
            raise Conflict("a token with this secret already exists; use another secret") from None
        return TokenCreated(**read.model_dump(), token=secret)

    def authenticate(self, secret: str) -> Principal | None:
        """The principal a secret stands for, or None (unknown or revoked)."""
        if not secret or len(secret) > MAX_SECRET_CHARS:
            return None
        digest = hash_secret(secret)
        return self.principals([digest]).get(digest)

    def principals(self, digests: Collection[str]) -> dict[str, Principal]:
        """The principal of each hash that belongs to a token not revoked, in one read per 500."""
        wanted = sorted(set(digests))
        found: dict[str, Principal] = {}
        with self.store.snapshot() as s:
            for i in range(0, len(wanted), _IN_CHUNK):
                q = select(TokenRow.hash, TokenRow.name, TokenRow.role, TokenRow.app).where(
                    TokenRow.hash.in_(wanted[i : i + _IN_CHUNK]), TokenRow.revoked_at.is_(None)
                )
                for digest, name, role, app in s.execute(q).all():
                    found[digest] = Principal(name, cast(Role, role), app)
        return found

    def revoke(self, token_id: int) -> TokenRead:
        """Revoke a token at once (idempotent); the last admin token cannot be revoked."""
        with self.store.transaction() as s:
            row = s.get(TokenRow, token_id)
            if row is None:
                raise NotFound(f"no token with id {token_id}")
            if row.revoked_at is None:
                if row.role == "admin" and _active_admins(s) <= 1:
                    raise Conflict(
                        f"token {token_id} ({row.name}) is the last admin token; create another"
                        " admin token first, then revoke this one"
                    )
                row.revoked_at = self.clock()
            read, digest = _token_read(row), row.hash
        for tell in list(self.on_revoke):
            try:
                tell(digest)
            except Exception:  # the revocation is committed; a listener's failure is its own
                log.exception("a token revocation listener failed")
        return read

    def has_admin(self) -> bool:
        """True when at least one admin token is not revoked."""
        with self.store.transaction() as s:
            return _active_admins(s) > 0

    def bootstrap(self, secret: str | None = None) -> TokenCreated | None:
        """Make sure an admin token exists; return the one created, None if there was one.

        With ``secret`` (``COALMINE_BOOTSTRAP_TOKEN``) the admin token named
        ``bootstrap`` gets exactly that secret, unless a token with that secret
        already exists; otherwise (or if that token was revoked and no admin
        is left) a new secret is generated: the caller must show it once.
        """
        if self.has_admin():
            return None
        if secret:
            try:
                return self.create(BOOTSTRAP_NAME, "admin", secret=secret)
            except Conflict:
                pass  # the token exists: created by another replica, or revoked
            if self.has_admin():
                return None
            log.warning(
                "the token given in COALMINE_BOOTSTRAP_TOKEN is revoked and no admin token is"
                " left; generating a new admin token"
            )
        return self.create(BOOTSTRAP_NAME, "admin")

    def list(self) -> builtins.list[TokenRead]:
        """Every token, revoked ones included, oldest first (never the secrets)."""
        with self.store.transaction() as s:
            return [_token_read(row) for row in s.scalars(select(TokenRow).order_by(TokenRow.id))]


def _active_admins(s: Session) -> int:
    count = s.scalar(
        select(func.count())
        .select_from(TokenRow)
        .where(TokenRow.role == "admin", TokenRow.revoked_at.is_(None))
    )
    return int(count or 0)


def _token_read(row: TokenRow) -> TokenRead:
    return TokenRead(
        id=row.id,
        name=row.name,
        role=row.role,
        app=row.app,
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )
