"""Who the user is: the key the gateway buckets on, from a header, a cookie or a JWT.

Strategies are tried in the configured order (default: header, cookie, JWT);
the first that yields a key wins. None is on by default: trusting a header,
cookie or token is the deployer's explicit choice, because a client that
reaches the gateway directly can set any of them. A user none of them
identifies is anonymous: the gateway mints a random id, signs it with its
keyring (`coalmine.core.signing`, purpose ``coalmine-anonymous``) and sets
it in the ``coalmine-uid`` cookie, so one browser keeps one cohort for a
year. A cookie the keyring did not sign is ignored and replaced: a client
cannot pick its own id and so retry ids until one lands in the canary.

JWT claims are trusted only when the token verifies (`coalmine.gateway.bearer`:
an HS256 secret, an RS256/ES256 public key or a JWKS URL; ``exp`` required
unless configured otherwise; ``aud`` / ``iss`` when configured). Decoding
without verifying is possible but must be asked for (``jwt_unverified``):
then any client can put any user id in a token it makes itself and so choose
its channel. Use it only behind a proxy that has already verified the token.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from coalmine.core.errors import InvalidInput
from coalmine.core.signing import Keyring, seal, unseal
from coalmine.core.userkey import decode_header
from coalmine.gateway.bearer import BearerVerifier, check_jwt_settings

__all__ = [
    "ANONYMOUS_COOKIE",
    "ANONYMOUS_MAX_AGE",
    "ANONYMOUS_PURPOSE",
    "Identifier",
    "Identity",
    "IdentityConfig",
    "IdentitySource",
    "parse_cookies",
]

ANONYMOUS_COOKIE = "coalmine-uid"
ANONYMOUS_MAX_AGE = 365 * 24 * 3600
MAX_KEY_CHARS = 256
"""a longer header, cookie or claim value is not taken as a user key"""
ANONYMOUS_PURPOSE = "coalmine-anonymous"
"""what anonymous-id cookies are signed for (a routing context cannot pass for one)"""
_ANON_COOKIE_BYTES = 512
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_COOKIE_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class IdentitySource(StrEnum):
    HEADER = "header"
    COOKIE = "cookie"
    JWT = "jwt"
    ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class IdentityConfig:
    """How the gateway identifies users.

    A strategy takes part when it is configured: ``user_header`` (None turns it
    off), ``user_cookie``, and JWT when one of ``jwt_secret``,
    ``jwt_public_key`` (PEM) or ``jwt_jwks_url`` is set, or ``jwt_unverified``
    is explicitly allowed.
    """

    user_header: str | None = None
    """a header trusted to name the user (say ``x-user-id`` behind an authenticating proxy)"""
    user_cookie: str | None = None
    jwt_claim: str = "sub"
    jwt_secret: str | None = None
    """HS256 secret, at least 32 bytes"""
    jwt_public_key: str | None = None
    """PEM public key: RSA (RS256) or P-256 (ES256)"""
    jwt_jwks_url: str | None = None
    """where the RS256 / ES256 keys are published, chosen by the token's ``kid``"""
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_require_exp: bool = True
    """refuse tokens without ``exp`` (they would be valid forever)"""
    jwt_unverified: bool = False
    """decode JWTs without checking their signature: clients can then choose their user id"""
    order: tuple[IdentitySource, ...] = (
        IdentitySource.HEADER,
        IdentitySource.COOKIE,
        IdentitySource.JWT,
    )
    anonymous_cookie: str = ANONYMOUS_COOKIE

    def __post_init__(self) -> None:
        if self.user_header is not None:
            if not _HEADER_NAME.fullmatch(self.user_header.lower()):
                raise InvalidInput(f"invalid user header name {self.user_header!r}")
            object.__setattr__(self, "user_header", self.user_header.lower())
        for what, name in (("user", self.user_cookie), ("anonymous", self.anonymous_cookie)):
            if name is not None and not _COOKIE_NAME.fullmatch(name):
                raise InvalidInput(f"invalid {what} cookie name {name!r}")
        if not self.jwt_claim:
            raise InvalidInput("the JWT claim name must not be empty")
        check_jwt_settings(
            self.jwt_secret, self.jwt_public_key, self.jwt_jwks_url, self.jwt_unverified
        )
        order = tuple(IdentitySource(s) for s in self.order)
        if IdentitySource.ANONYMOUS in order or len(set(order)) != len(order):
            raise InvalidInput(
                "the identity order lists header, cookie and jwt, each at most once"
                " (anonymous always comes last)"
            )
        object.__setattr__(self, "order", order)

    @property
    def jwt_enabled(self) -> bool:
        return self.jwt_unverified or any(
            s is not None for s in (self.jwt_secret, self.jwt_public_key, self.jwt_jwks_url)
        )

    def describe(self) -> str:
        """One line for the log at start: what identifies users, in order."""
        parts: list[str] = []
        for source in self.order:
            if source is IdentitySource.HEADER and self.user_header is not None:
                parts.append(
                    f"header {self.user_header} (trusted: only a proxy in front may set it)"
                )
            elif source is IdentitySource.COOKIE and self.user_cookie is not None:
                parts.append(f"cookie {self.user_cookie}")
            elif source is IdentitySource.JWT and self.jwt_enabled:
                how = (
                    "UNVERIFIED"
                    if self.jwt_unverified
                    else "HS256"
                    if self.jwt_secret is not None
                    else "public key"
                    if self.jwt_public_key is not None
                    else f"JWKS {self.jwt_jwks_url}"
                )
                for name, value in (("aud", self.jwt_audience), ("iss", self.jwt_issuer)):
                    if value is not None:
                        how += f", {name} {value}"
                if not self.jwt_require_exp:
                    how += ", exp optional"
                parts.append(f"JWT claim {self.jwt_claim} ({how})")
        anon = f"a signed anonymous cookie {self.anonymous_cookie}"
        if not parts:
            return f"users are identified by {anon} only (no header, cookie or JWT is trusted)"
        return f"users are identified by {', then '.join(parts)}, else {anon}"


@dataclass(frozen=True, slots=True)
class Identity:
    """A user key, where it came from, and a cookie to set when one was minted."""

    user: str
    source: IdentitySource
    set_cookie: str | None = None
    """the ``Set-Cookie`` value for a newly minted anonymous id"""


def parse_cookies(header: str | None) -> dict[str, str]:
    """``name=value`` pairs of a ``Cookie`` header; the first of a repeated name wins."""
    out: dict[str, str] = {}
    if not header:
        return out
    for part in header.split(";"):
        name, sep, value = part.partition("=")
        name = name.strip(_OWS)
        if sep and name and name not in out:
            value = value.strip(_OWS)
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            out[name] = value
    return out


_OWS = " \t"
"""HTTP's optional whitespace: only these are stripped from header and cookie values (str.strip
would also take bytes 0x85 and 0xA0, which are parts of UTF-8 characters such as "à")"""


def _wire_key(value: str | None) -> str | None:
    """The user key in a header or cookie value: percent-encoded or raw UTF-8 (core.userkey)."""
    if value is None:
        return None
    text = value.strip(_OWS)
    return _key(decode_header(text)) if text else None


def _key(value: object) -> str | None:
    """A claim's or a decoded value's user key: the string as it is (an integer as digits)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    return text if text and len(text) <= MAX_KEY_CHARS else None


class Identifier:
    """Applies an `IdentityConfig` to a request's headers.

    ``keyring`` signs and verifies anonymous ids; without one, a random key
    made here (ids then last as long as this object: give gateways that
    share users one keyring).
    """

    def __init__(self, config: IdentityConfig, keyring: Keyring | None = None) -> None:
        self.config = config
        self.keyring = (
            keyring if keyring is not None else Keyring.single(secrets.token_bytes(32), "anon")
        )
        self.bearer: BearerVerifier | None = None
        """verifies JWTs; None when the JWT strategy is off"""
        if config.jwt_enabled:
            self.bearer = BearerVerifier(
                secret=config.jwt_secret,
                public_key=config.jwt_public_key,
                jwks_url=config.jwt_jwks_url,
                unverified=config.jwt_unverified,
                audience=config.jwt_audience,
                issuer=config.jwt_issuer,
                require_exp=config.jwt_require_exp,
            )

    def identify(self, headers: Mapping[str, str], *, now: float, secure: bool) -> Identity:
        """The request's user. ``headers`` are lowercase names to (joined) values."""
        cfg = self.config
        cookies: dict[str, str] | None = None
        for source in cfg.order:
            key: str | None = None
            if source is IdentitySource.HEADER and cfg.user_header is not None:
                key = _wire_key(headers.get(cfg.user_header))
            elif source is IdentitySource.COOKIE and cfg.user_cookie is not None:
                cookies = parse_cookies(headers.get("cookie")) if cookies is None else cookies
                key = _wire_key(cookies.get(cfg.user_cookie))
            elif source is IdentitySource.JWT and self.bearer is not None:
                key = self.jwt_user(headers.get("authorization"), now=now)
            if key is not None:
                return Identity(key, source)
        cookies = parse_cookies(headers.get("cookie")) if cookies is None else cookies
        anon = self._anonymous(cookies.get(cfg.anonymous_cookie), now=now)
        if anon is not None:
            return Identity(anon, IdentitySource.ANONYMOUS)
        minted = secrets.token_urlsafe(18)
        signed = seal(
            ANONYMOUS_PURPOSE, self.keyring, {"u": minted, "e": int(now) + ANONYMOUS_MAX_AGE}
        )
        cookie = (
            f"{cfg.anonymous_cookie}={signed}; Path=/; Max-Age={ANONYMOUS_MAX_AGE};"
            " HttpOnly; SameSite=Lax"
        )
        return Identity(minted, IdentitySource.ANONYMOUS, cookie + ("; Secure" if secure else ""))

    def _anonymous(self, value: str | None, *, now: float) -> str | None:
        """The id in an anonymous cookie this gateway's keyring signed, else None."""
        if not value:
            return None
        claims = unseal(
            ANONYMOUS_PURPOSE, self.keyring, value, now=now, max_bytes=_ANON_COOKIE_BYTES
        )
        if not isinstance(claims, dict):
            return None
        user = claims.get("u")
        return user if isinstance(user, str) and _key(user) == user else None

    def jwt_user(self, authorization: str | None, *, now: float) -> str | None:
        """The configured claim of a Bearer JWT, or None when it is absent or not trusted."""
        if not authorization:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        if self.bearer is None:
            return None
        claims = self.bearer.claims(token.strip(), now=now)
        return None if claims is None else _key(claims.get(self.config.jwt_claim))

    def refresh_jwks(self) -> int:
        """Fetch the JWKS URL's keys now (blocking); 0 without a JWKS URL."""
        return 0 if self.bearer is None else self.bearer.refresh_jwks()
