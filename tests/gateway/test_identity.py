"""Identity strategies: header, cookie, JWT (verified, or unverified only when allowed), anonymous."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from coalmine.core.context import PURPOSE as CONTEXT_PURPOSE
from coalmine.core.errors import InvalidInput
from coalmine.core.signing import seal
from coalmine.gateway.identity import (
    ANONYMOUS_PURPOSE,
    Identifier,
    IdentityConfig,
    IdentitySource,
    parse_cookies,
)
from tests.gateway.fixtures.harness import KEYRING, OTHER_KEYRING, make_jwt

NOW = 1_700_000_000.0
SECRET = "jwt-s3cret-of-at-least-32-bytes-long"


def ident(config: IdentityConfig, headers: dict[str, str], secure: bool = False) -> Any:
    return Identifier(config, KEYRING).identify(headers, now=NOW, secure=secure)


def unsigned(claims: dict[str, Any], alg: str = "none") -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return f"{b64(json.dumps({'alg': alg}).encode())}.{b64(json.dumps(claims).encode())}."


def test_strategies_in_order_header_then_cookie_then_jwt() -> None:
    config = IdentityConfig(user_header="x-user-id", user_cookie="uid", jwt_secret=SECRET)
    bearer = f"Bearer {make_jwt({'sub': 'from-jwt', 'exp': NOW + 60}, SECRET)}"
    both = {"x-user-id": "from-header", "cookie": "uid=from-cookie", "authorization": bearer}
    got = ident(config, both)
    assert (got.user, got.source, got.set_cookie) == ("from-header", IdentitySource.HEADER, None)
    assert ident(config, {**both, "x-user-id": " "}).user == "from-cookie"
    assert ident(config, {"authorization": bearer}).source is IdentitySource.JWT
    reordered = IdentityConfig(
        user_header="x-user-id",
        user_cookie="uid",
        jwt_secret=SECRET,
        order=(IdentitySource.JWT, IdentitySource.HEADER),
    )
    assert ident(reordered, both).user == "from-jwt"
    # the cookie strategy is not in that order
    assert ident(reordered, {"cookie": "uid=from-cookie"}).source is IdentitySource.ANONYMOUS


def test_jwt_claims_are_trusted_only_when_verified() -> None:
    config = IdentityConfig(jwt_secret=SECRET, jwt_claim="uid")
    ok = make_jwt({"uid": 42, "exp": NOW + 10}, SECRET)
    assert ident(config, {"authorization": f"Bearer {ok}"}).user == "42"
    rejected = [
        make_jwt({"uid": "u"}, "wrong"),
        make_jwt({"uid": "u", "exp": NOW}, SECRET),  # expired
        make_jwt({"uid": "u", "nbf": NOW + 5}, SECRET),  # not yet valid
        make_jwt({"sub": "u"}, SECRET),  # no such claim
        make_jwt({"uid": True}, SECRET),
        unsigned({"uid": "u"}),  # alg none
        unsigned({"uid": "u"}, alg="HS256"),
        ok[:-2] + "AA",
        "not.a.jwt",
        "x",
    ]
    for token in rejected:
        got = ident(config, {"authorization": f"Bearer {token}"})
        assert got.source is IdentitySource.ANONYMOUS, token
    assert ident(config, {"authorization": f"Basic {ok}"}).source is IdentitySource.ANONYMOUS


def test_unverified_jwts_only_when_explicitly_allowed() -> None:
    token = unsigned({"sub": "whoever-i-say", "exp": NOW + 60})
    assert ident(IdentityConfig(), {"authorization": f"Bearer {token}"}).source is (
        IdentitySource.ANONYMOUS
    )
    got = ident(IdentityConfig(jwt_unverified=True), {"authorization": f"Bearer {token}"})
    assert (got.user, got.source) == ("whoever-i-say", IdentitySource.JWT)
    expired = unsigned({"sub": "u", "exp": NOW - 1})
    got = ident(IdentityConfig(jwt_unverified=True), {"authorization": f"Bearer {expired}"})
    assert got.source is IdentitySource.ANONYMOUS


def _cookie_value(set_cookie: str | None) -> str:
    assert set_cookie is not None
    return set_cookie.split(";")[0].removeprefix("coalmine-uid=")


def test_anonymous_ids_are_minted_signed_once_and_read_back() -> None:
    config = IdentityConfig()
    first = ident(config, {}, secure=True)
    assert first.source is IdentitySource.ANONYMOUS
    value = _cookie_value(first.set_cookie)
    assert value != first.user  # the cookie is the id signed, not the bare id
    assert first.set_cookie == (
        f"coalmine-uid={value}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax; Secure"
    )
    again = ident(config, {"cookie": f"other=1; coalmine-uid={value}"})
    assert (again.user, again.set_cookie) == (first.user, None)
    assert ident(config, {}).user != first.user
    assert "Secure" not in (ident(config, {}).set_cookie or "")


def test_a_client_cannot_choose_its_anonymous_id() -> None:
    """Any 16-64 character value used to be taken: a client could retry ids into the canary."""
    config = IdentityConfig()
    minted = _cookie_value(ident(config, {}).set_cookie)
    head, _, sig = minted.rpartition(".")
    chosen = [
        "x",
        "a-user-id-i-picked-myself",  # the old format: 16-64 of [A-Za-z0-9_-]
        "A" * 64,
        f"{head}.{'A' * len(sig)}",  # a forged signature
        f"{head[:-2]}AA.{sig}",  # a changed payload
        seal(CONTEXT_PURPOSE, KEYRING, {"u": "chosen-user-id", "e": int(NOW) + 60}),
        seal(ANONYMOUS_PURPOSE, OTHER_KEYRING, {"u": "chosen-user-id", "e": int(NOW) + 60}),
        seal(ANONYMOUS_PURPOSE, KEYRING, {"u": "chosen-user-id", "e": int(NOW) - 1}),  # expired
        seal(ANONYMOUS_PURPOSE, KEYRING, {"u": 7, "e": int(NOW) + 60}),
    ]
    for value in chosen:
        got = Identifier(config, KEYRING).identify(
            {"cookie": f"coalmine-uid={value}"}, now=NOW, secure=False
        )
        assert got.source is IdentitySource.ANONYMOUS, value
        assert got.user not in ("chosen-user-id", value), value
        assert got.set_cookie is not None, value  # a fresh id, signed, replaces it
    # one the gateway's keyring signed is read back, across Identifiers sharing the keyring
    issued = Identifier(config, KEYRING).identify({}, now=NOW, secure=False)
    back = Identifier(config, KEYRING).identify(
        {"cookie": f"coalmine-uid={_cookie_value(issued.set_cookie)}"}, now=NOW + 5, secure=False
    )
    assert (back.user, back.set_cookie) == (issued.user, None)


def test_no_identity_header_is_trusted_unless_configured() -> None:
    got = ident(IdentityConfig(), {"x-user-id": "i-say-i-am-a-tester"})
    assert got.source is IdentitySource.ANONYMOUS
    assert got.user != "i-say-i-am-a-tester"
    trusted = ident(IdentityConfig(user_header="x-user-id"), {"x-user-id": "ada"})
    assert (trusted.user, trusted.source) == ("ada", IdentitySource.HEADER)


def test_the_startup_line_says_what_identifies_users() -> None:
    assert IdentityConfig().describe() == (
        "users are identified by a signed anonymous cookie coalmine-uid only"
        " (no header, cookie or JWT is trusted)"
    )
    both = IdentityConfig(user_header="x-user-id", jwt_secret=SECRET)
    assert both.describe() == (
        "users are identified by header x-user-id (trusted: only a proxy in front may set it),"
        " then JWT claim sub (HS256), else a signed anonymous cookie coalmine-uid"
    )
    jwks = IdentityConfig(
        jwt_jwks_url="https://id.example/jwks.json", jwt_audience="shop", jwt_require_exp=False
    )
    assert jwks.describe() == (
        "users are identified by JWT claim sub (JWKS https://id.example/jwks.json, aud shop,"
        " exp optional), else a signed anonymous cookie coalmine-uid"
    )


def test_overlong_keys_are_not_user_keys() -> None:
    got = ident(IdentityConfig(user_header="x-user-id"), {"x-user-id": "u" * 257})
    assert got.source is IdentitySource.ANONYMOUS


def test_parse_cookies() -> None:
    assert parse_cookies('a=1; b="two"; a=3; junk; c=') == {"a": "1", "b": "two", "c": ""}
    assert parse_cookies(None) == {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"user_header": "bad header"}, "invalid user header"),
        ({"user_cookie": "a;b"}, "invalid user cookie"),
        ({"jwt_secret": SECRET, "jwt_unverified": True}, "not both"),
        ({"jwt_secret": ""}, "at least 32 bytes"),
        ({"jwt_claim": ""}, "must not be empty"),
        ({"order": ("header", "header")}, "at most once"),
        ({"order": ("anonymous",)}, "at most once"),
        ({"order": ("ldap",)}, "ldap"),
    ],
)
def test_bad_identity_settings_say_what_is_wrong(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises((InvalidInput, ValueError), match=message):
        IdentityConfig(**kwargs)


def test_header_names_are_lowercased_and_jwt_time_is_the_callers() -> None:
    assert IdentityConfig(user_header="X-User").user_header == "x-user"
    token = make_jwt({"sub": "u", "exp": time.time() + 60}, SECRET)
    assert (
        Identifier(IdentityConfig(jwt_secret=SECRET)).jwt_user(f"Bearer {token}", now=time.time())
        == "u"
    )
