"""JWT identity: what a token must prove before its claim names the user.

HS256 with a secret of at least 32 bytes, RS256 / ES256 with a public key or
the keys of a JWKS URL; ``exp`` required (unless configured otherwise) and
numeric; ``aud`` / ``iss`` checked when configured. Every refusal here was
accepted before.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from coalmine.core.errors import InvalidInput
from coalmine.gateway.identity import Identifier, IdentityConfig, IdentitySource
from tests.gateway.fixtures.harness import KEYRING

NOW = 1_700_000_000
SECRET = "a-jwt-secret-of-thirty-two-bytes!"
RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC = ec.generate_private_key(ec.SECP256R1())


def pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def user(config: IdentityConfig, token: str, identifier: Identifier | None = None) -> str | None:
    got = (identifier or Identifier(config, KEYRING)).identify(
        {"authorization": f"Bearer {token}"}, now=NOW, secure=False
    )
    return got.user if got.source is IdentitySource.JWT else None


def hs(claims: dict[str, Any], secret: str = SECRET, **headers: Any) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers=headers or None)


def test_a_token_without_exp_is_refused_unless_configured() -> None:
    assert user(IdentityConfig(jwt_secret=SECRET), hs({"sub": "u"})) is None
    lax = IdentityConfig(jwt_secret=SECRET, jwt_require_exp=False)
    assert user(lax, hs({"sub": "u"})) == "u"


@pytest.mark.parametrize("exp", [str(NOW + 60), "never", None, [NOW + 60], True])
def test_a_non_numeric_exp_is_refused(exp: Any) -> None:
    config = IdentityConfig(jwt_secret=SECRET)
    assert user(config, hs({"sub": "u", "exp": NOW + 60})) == "u"
    assert user(config, hs({"sub": "u", "exp": exp})) is None
    lax = IdentityConfig(jwt_secret=SECRET, jwt_require_exp=False)
    assert user(lax, hs({"sub": "u", "exp": exp})) is None  # present, so it must be a time


def test_expired_and_not_yet_valid_tokens_are_refused() -> None:
    config = IdentityConfig(jwt_secret=SECRET)
    assert user(config, hs({"sub": "u", "exp": NOW})) is None
    assert user(config, hs({"sub": "u", "exp": NOW + 60, "nbf": NOW + 5})) is None
    assert user(config, hs({"sub": "u", "exp": NOW + 60, "nbf": "soon"})) is None


@pytest.mark.parametrize("secret", ["x", "s" * 31, "é" * 15])
def test_a_short_hs256_secret_is_refused_at_start(secret: str) -> None:
    with pytest.raises(InvalidInput, match="at least 32 bytes"):
        IdentityConfig(jwt_secret=secret)


def test_audience_and_issuer_are_checked_when_configured() -> None:
    config = IdentityConfig(jwt_secret=SECRET, jwt_audience="shop", jwt_issuer="https://id.example")
    good = {"sub": "u", "exp": NOW + 60, "aud": "shop", "iss": "https://id.example"}
    assert user(config, hs(good)) == "u"
    assert user(config, hs({**good, "aud": ["other", "shop"]})) == "u"
    for bad in (
        {**good, "aud": "other"},
        {k: v for k, v in good.items() if k != "aud"},
        {**good, "iss": "https://evil.example"},
        {k: v for k, v in good.items() if k != "iss"},
    ):
        assert user(config, hs(bad)) is None, bad
    # without an audience configured, a token made for another service is refused
    # only when it names one: PyJWT's rule, kept (aud given but not expected)
    assert user(IdentityConfig(jwt_secret=SECRET), hs({"sub": "u", "exp": NOW + 60})) == "u"


def test_rs256_and_es256_with_a_public_key() -> None:
    claims = {"sub": "u", "exp": NOW + 60}
    rs = IdentityConfig(jwt_public_key=pem(RSA))
    assert user(rs, jwt.encode(claims, RSA, algorithm="RS256")) == "u"
    assert user(rs, jwt.encode(claims, OTHER_RSA, algorithm="RS256")) is None
    es = IdentityConfig(jwt_public_key=pem(EC))
    assert user(es, jwt.encode(claims, EC, algorithm="ES256")) == "u"
    assert user(rs, jwt.encode(claims, EC, algorithm="ES256")) is None


def test_the_public_key_cannot_serve_as_an_hmac_secret() -> None:
    """Algorithm confusion: an HS256 token 'signed' with the public key text is refused."""
    config = IdentityConfig(jwt_public_key=pem(RSA))
    import hashlib
    import hmac

    head = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = jwt.utils.base64url_encode(json.dumps({"sub": "u", "exp": NOW + 60}).encode())
    signing_input = head + b"." + body
    sig = hmac.new(pem(RSA).encode(), signing_input, hashlib.sha256).digest()
    forged = (signing_input + b"." + jwt.utils.base64url_encode(sig)).decode()
    assert user(config, forged) is None
    assert user(config, jwt.encode({"sub": "u", "exp": NOW + 60}, None, algorithm="none")) is None


@pytest.fixture
def jwks_url() -> Iterator[str]:
    numbers = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA.public_key()))
    body = json.dumps({"keys": [{**numbers, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


def test_keys_from_a_jwks_url(jwks_url: str) -> None:
    config = IdentityConfig(jwt_jwks_url=jwks_url)
    identifier = Identifier(config, KEYRING)
    claims = {"sub": "u", "exp": NOW + 60}
    token = jwt.encode(claims, RSA, algorithm="RS256", headers={"kid": "k1"})
    # the keys are fetched off the request path: none yet, so no token is trusted
    assert user(config, token, identifier) is None
    identifier.refresh_jwks()
    assert user(config, token, identifier) == "u"
    other_kid = jwt.encode(claims, RSA, algorithm="RS256", headers={"kid": "k2"})
    assert user(config, other_kid, identifier) is None
    forged = jwt.encode(claims, OTHER_RSA, algorithm="RS256", headers={"kid": "k1"})
    assert user(config, forged, identifier) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"jwt_secret": SECRET, "jwt_public_key": "x"}, "one of"),
        ({"jwt_public_key": "not a pem"}, "public key"),
        ({"jwt_jwks_url": "file:///etc/passwd"}, "http"),
        ({"jwt_public_key": "x", "jwt_unverified": True}, "not both"),
    ],
)
def test_bad_jwt_settings_say_what_is_wrong(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        IdentityConfig(**kwargs)


async def test_the_gateway_fetches_the_jwks_at_start(jwks_url: str) -> None:
    from coalmine.gateway import Gateway, GatewayConfig, StaticSource
    from tests.gateway.fixtures.harness import APP, shop_snapshot

    config = GatewayConfig(app=APP, identity=IdentityConfig(jwt_jwks_url=jwks_url))
    gateway = Gateway(config, StaticSource(shop_snapshot("http://upstream.invalid")))
    token = jwt.encode({"sub": "u", "exp": NOW + 60}, RSA, algorithm="RS256", headers={"kid": "k1"})
    assert user(config.identity, token, gateway.identifier) is None
    await gateway.startup()
    try:
        assert user(config.identity, token, gateway.identifier) == "u"
    finally:
        await gateway.shutdown()
