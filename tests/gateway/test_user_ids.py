"""One user, one bucket, whatever the id: every way a user id reaches the gateway.

An id is a Unicode string, bucketed as given (no normalisation). On an HTTP
header or in a cookie it travels as percent-encoded UTF-8; a header may also
carry it as raw UTF-8 bytes. A JWT claim is a JSON string. Whichever way an
id came, the gateway must decide for exactly that string: the same channel
as `coalmine.core.routing.decide`, and the same id sent downstream.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import quote

import jwt
from hypothesis import given, settings
from hypothesis import strategies as st

from coalmine.core.model import TargetKind
from coalmine.core.routing import decide
from coalmine.core.userkey import decode_header, encode_header
from coalmine.gateway import (
    Call,
    Gateway,
    GatewayConfig,
    IdentityConfig,
    MockTarget,
    Reply,
    StaticSource,
)
from tests.gateway.fixtures.harness import APP, asgi_get, shop_snapshot

SECRET = "user-ids-test-secret-of-32-bytes!"
SNAPSHOT = shop_snapshot("http://upstream.invalid", exposure=5000)
IDS = st.text(min_size=1, max_size=60)
"""any Unicode id (Hypothesis leaves out lone surrogates, which no UTF-8 wire can carry)"""
EXAMPLES = [
    "zoë",
    "zoe\u0308",  # the same name, decomposed: another id (no normalisation)
    "用户-42",
    "пользователь",
    "مستخدم",
    "🐤🚀",
    "ada.lovelace+canary@example.com",
    "50% off",
    "%C3%A9",  # literally these six characters
    " padded ",
    'semi;colon,comma"quote\\',
]


def _gateway(seen: list[Call]) -> Gateway:
    def answer(call: Call, body: bytes) -> Reply:
        seen.append(call)
        return Reply(200, [], b"ok")

    identity = IdentityConfig(user_header="x-user-id", user_cookie="uid", jwt_secret=SECRET)
    return Gateway(
        GatewayConfig(app=APP, identity=identity),
        StaticSource(SNAPSHOT),
        targets={TargetKind.HTTP: MockTarget(answer)},
    )


def _wires(user: str) -> dict[str, tuple[bytes, bytes]]:
    """The request headers that name ``user``, one per way an id can reach the gateway."""
    token = jwt.encode({"sub": user, "exp": time.time() + 600}, SECRET, algorithm="HS256")
    wires = {
        "header, percent-encoded": (b"x-user-id", quote(user, safe="").encode("ascii")),
        "header, encode_header": (b"x-user-id", encode_header(user).encode("ascii")),
        "cookie, percent-encoded": (b"cookie", f"uid={encode_header(user)}".encode("ascii")),
        "JWT claim": (b"authorization", f"Bearer {token}".encode("ascii")),
    }
    if "%" not in user and user.isprintable() and user == user.strip():
        wires["header, raw UTF-8"] = (b"x-user-id", user.encode("utf-8"))
    return wires


async def _check(user: str) -> None:
    seen: list[Call] = []
    gateway = _gateway(seen)
    expected = decide(SNAPSHOT.state, user)
    for wire, header in _wires(user).items():
        seen.clear()
        status, out, _ = await asgi_get(gateway, b"/api/", [header])
        assert status == 200, wire
        got = dict(out)
        assert got[b"x-coalmine-channel"].decode() == str(expected.channel), (wire, user)
        assert got[b"x-coalmine-version"].decode() == expected.versions["api"], (wire, user)
        sent = dict(seen[0].headers)[b"x-coalmine-user"]
        assert decode_header(sent.decode("latin-1")) == user, (wire, user)


def test_named_ids_land_in_one_bucket_on_every_wire() -> None:
    for user in EXAMPLES:
        asyncio.run(_check(user))


@settings(max_examples=150, deadline=None)
@given(IDS)
def test_any_unicode_id_lands_in_one_bucket_on_every_wire(user: str) -> None:
    asyncio.run(_check(user))


@given(IDS)
def test_the_header_form_round_trips(user: str) -> None:
    wire = encode_header(user)
    assert wire.isascii()
    assert all(c not in wire for c in ' ",;\\')  # a header value and a cookie value alike
    assert decode_header(wire) == user
    # as ASGI hands header bytes over (latin-1) and as raw UTF-8 bytes
    assert decode_header(wire.encode("ascii").decode("latin-1")) == user
    if "%" not in user:
        assert decode_header(user.encode("utf-8").decode("latin-1")) == user


def test_printable_ascii_ids_travel_unchanged() -> None:
    assert encode_header("ada.lovelace+canary@example.com") == "ada.lovelace+canary@example.com"
    assert encode_header("user-42") == "user-42"
    assert encode_header("50% off") == "50%25%20off"
