"""Bearer JWTs: which tokens the gateway trusts to name a user, verified with PyJWT.

A token is trusted when its signature verifies with one configured source
of keys: an HS256 secret (at least 32 bytes, RFC 7518's minimum for
HS256), one public key (RS256 for RSA, ES256 for P-256), or the keys of a
JWKS URL (RS256 / ES256, chosen by the token's ``kid``). The algorithm is
the key's, never the token's: an HS256 token "signed" with a public key's
text is refused. ``exp`` is required unless configured otherwise and, when
present, must be a number, as must ``nbf``; ``aud`` and ``iss`` are checked
when an audience or issuer is configured (a token that names an audience
is refused when none is: PyJWT's rule).

JWKS keys are fetched off the request path (`BearerVerifier.refresh_jwks`,
at the gateway's start and then every `JWKS_REFRESH_SECONDS`): a token
whose ``kid`` is not in the last fetched set is not trusted, so a client
cannot make the gateway fetch on demand.

Verification never raises: a token is the client's, and nothing in it may
fail the request; an untrusted token is simply not an identity.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from coalmine.core.errors import InvalidInput

__all__ = ["JWKS_REFRESH_SECONDS", "MIN_SECRET_BYTES", "BearerVerifier", "check_jwt_settings"]

MIN_SECRET_BYTES = 32
JWKS_REFRESH_SECONDS = 300.0
MAX_TOKEN_CHARS = 8192
_JWKS_ALGORITHMS = frozenset({"RS256", "ES256"})


def _public_key_algorithm(pem: str) -> tuple[Any, str]:
    """The key of a PEM public key and the one algorithm it verifies."""
    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"the JWT public key is not a PEM public key: {exc}") from None
    if isinstance(key, rsa.RSAPublicKey):
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    raise InvalidInput("the JWT public key must be an RSA key (RS256) or a P-256 key (ES256)")


def check_jwt_settings(
    secret: str | None, public_key: str | None, jwks_url: str | None, unverified: bool
) -> None:
    """Raise `InvalidInput` naming what is wrong with a JWT configuration."""
    given = [s for s in (secret, public_key, jwks_url) if s is not None]
    if unverified and given:
        raise InvalidInput(
            "give a JWT secret, public key or JWKS URL, or allow unverified JWTs, not both"
        )
    if len(given) > 1:
        raise InvalidInput("give one of a JWT secret, a JWT public key or a JWKS URL")
    if secret is not None and len(secret.encode()) < MIN_SECRET_BYTES:
        raise InvalidInput(
            f"the JWT secret must be at least {MIN_SECRET_BYTES} bytes"
            f" (HS256's minimum), not {len(secret.encode())}"
        )
    if public_key is not None:
        _public_key_algorithm(public_key)
    if jwks_url is not None and not jwks_url.startswith(("https://", "http://")):
        raise InvalidInput(f"the JWKS URL must be http(s)://..., not {jwks_url!r}")


def _time(claims: dict[str, Any], name: str) -> float | bool | None:
    """A numeric date claim; None when absent; False when present but not a finite number."""
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return float(value)


class BearerVerifier:
    """Verifies the JWTs of one configuration (see the module docstring)."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key: str | None = None,
        jwks_url: str | None = None,
        unverified: bool = False,
        audience: str | None = None,
        issuer: str | None = None,
        require_exp: bool = True,
    ) -> None:
        check_jwt_settings(secret, public_key, jwks_url, unverified)
        self.jwks_url = jwks_url
        self._unverified = unverified
        self._audience = audience
        self._issuer = issuer
        self._require_exp = require_exp
        self._key: Any = None
        self._algorithm = "HS256"
        if secret is not None:
            self._key = secret.encode()
        elif public_key is not None:
            self._key, self._algorithm = _public_key_algorithm(public_key)
        self._jwks: dict[str, jwt.PyJWK] = {}
        self._lock = threading.Lock()

    def refresh_jwks(self, timeout: float = 10.0) -> int:
        """Fetch the JWKS URL's signing keys (blocking: run it off the event loop).

        Returns how many usable keys it holds; raises on a failed fetch, and
        then keeps the keys it had.
        """
        if self.jwks_url is None:
            return 0
        client = jwt.PyJWKClient(self.jwks_url, cache_jwk_set=False, timeout=int(timeout) or 1)
        keys = {
            k.key_id: k
            for k in client.get_signing_keys()
            if k.key_id is not None and k.algorithm_name in _JWKS_ALGORITHMS
        }
        with self._lock:
            self._jwks = keys
        return len(keys)

    def claims(self, token: str, *, now: float) -> dict[str, Any] | None:
        """The claims of ``token`` when it is trusted at ``now``, else None."""
        if len(token) > MAX_TOKEN_CHARS:
            return None
        try:
            claims = self._decode(token)
        except Exception:  # the client's bytes: anything wrong in them is "not trusted"
            return None
        if not isinstance(claims, dict):
            return None
        exp, nbf = _time(claims, "exp"), _time(claims, "nbf")
        if exp is False or nbf is False:
            return None
        if exp is None and self._require_exp:
            return None
        if isinstance(exp, float) and now >= exp:
            return None
        if isinstance(nbf, float) and now < nbf:
            return None
        return claims

    def _decode(self, token: str) -> Any:
        # time claims are checked by `claims` against the caller's clock
        options: Any = {  # jwt.types.Options (PyJWT >= 2.10 only)
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "require": ["exp"] if self._require_exp else [],
        }
        if self._unverified:
            options["verify_signature"] = False
            options["verify_aud"] = self._audience is not None
            options["verify_iss"] = self._issuer is not None
            return jwt.decode(
                token,
                options=options,
                algorithms=sorted(_JWKS_ALGORITHMS | {"HS256"}),
                audience=self._audience,
                issuer=self._issuer,
            )
        key, algorithm = self._key, self._algorithm
        if self.jwks_url is not None:
            kid = jwt.get_unverified_header(token).get("kid")
            with self._lock:
                jwk = self._jwks.get(kid) if isinstance(kid, str) else None
            if jwk is None:
                return None
            key, algorithm = jwk.key, jwk.algorithm_name
        return jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            options=options,
            audience=self._audience,
            issuer=self._issuer,
        )
