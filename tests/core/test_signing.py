"""The signed-token envelope shared by routing contexts and overrides."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalmine.core import (
    Channel,
    Decision,
    InvalidInput,
    Keyring,
    Reason,
    Rejected,
    RejectKind,
    RoutingContext,
    decode_context,
    decode_override,
    encode_context,
    issue_override,
)
from coalmine.core.context import PURPOSE as CONTEXT_PURPOSE
from coalmine.core.override import PURPOSE as OVERRIDE_PURPOSE
from coalmine.core.signing import KeyedMac, Sealer, claims_json, seal, unseal

K1 = b"k1-secret-0123456789abcdef"
K2 = b"k2-secret-fedcba9876543210"
NOW = 1_700_000_000
B64URL = string.ascii_letters + string.digits + "-_"


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_by_hand(key: bytes, purpose: str, kid: str, payload: bytes) -> str:
    """The token format from signing.py's docstring, built without coalmine."""
    signed = f"1.{kid}.{b64e(payload)}"
    mac = hmac.new(key, purpose.encode() + b"\x00" + signed.encode(), hashlib.sha256).digest()
    return f"{signed}.{b64e(mac[:16])}"


def decision(channel: Channel = Channel.CANARY, release_id: str | None = "r1") -> Decision:
    return Decision("shop", release_id, channel, {"cart": "v2", "pay": "v1"}, Reason.COHORT)


# --- Keyring -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "active", "message"),
    [
        ({}, "k1", "at least one key"),
        ({"k1": b"x" * 15}, "k1", "key 'k1' is too short: use at least 16 bytes"),
        ({"k1": b""}, "k1", "too short"),
        ({"k1": "a-str-not-bytes-0123"}, "k1", "too short"),
        ({"": K1}, "", "invalid key id ''"),
        ({"k 1": K1}, "k 1", "invalid key id 'k 1'"),
        ({"k.1": K1}, "k.1", "invalid key id"),
        ({"k:1": K1}, "k:1", "invalid key id"),
        ({"k" * 33: K1}, "k" * 33, "invalid key id"),
        ({"é": K1}, "é", "invalid key id"),
        ({"k1": K1}, "k2", "the active key id 'k2' is not in the keyring"),
    ],
)
def test_keyring_validation(keys: dict[str, Any], active: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Keyring(keys, active)


def test_keyring_accepts_valid_keys() -> None:
    kr = Keyring({"k" * 32: b"x" * 16, "A_b-9": K2}, "A_b-9")
    assert kr.active == "A_b-9"
    assert Keyring.single("a-str-secret-0123").keys == {"k1": b"a-str-secret-0123"}
    assert Keyring.single(K2, kid="old").active == "old"


def test_keyring_copies_its_keys() -> None:
    keys = {"k1": K1}
    kr = Keyring(keys, "k1")
    keys["k2"] = K2
    assert set(kr.keys) == {"k1"}


def test_keyring_parse() -> None:
    kr = Keyring.parse(" new :new-secret-0123456789 , old:old:secret:0123456789")
    assert kr.active == "new"
    assert kr.keys == {"new": b"new-secret-0123456789", "old": b"old:secret:0123456789"}
    # spaces around a secret (as in "k1: secret" from an env file) are not part of it
    assert Keyring.parse("k1: padded-secret-0123456789 ").keys == {
        "k1": b"padded-secret-0123456789"
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "kid:secret"),
        ("k1", "kid:secret"),
        ("k1:", "kid:secret"),
        ("k1:0123456789abcdef,", "kid:secret"),
        ("k1:short", "too short"),
        ("bad kid:0123456789abcdef", "invalid key id 'bad kid'"),
        (":0123456789abcdef", "invalid key id ''"),
        # a rotation that reused the id: which secret would verify? refuse, never keep one
        (
            "k1:new-secret-0123456789,k1:old-secret-0123456789",
            "key id 'k1' is given twice",
        ),
        (" k1 :same-secret-0123456789,k1:same-secret-0123456789", "key id 'k1' is given twice"),
    ],
)
def test_keyring_parse_errors(spec: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Keyring.parse(spec)


# --- the wire form ---------------------------------------------------------------------


def test_seal_follows_the_documented_wire_form() -> None:
    kr = Keyring.single(K1, "kid_1")
    claims = {"z": 1, "a": "é", "e": NOW + 5, "m": {"y": None, "b": [1, 2]}}
    token = seal("p", kr, claims)
    assert re.fullmatch(r"1\.kid_1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{22}", token)
    body = json.dumps(claims, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    assert body == '{"a":"é","e":1700000005,"m":{"b":[1,2],"y":null},"z":1}'
    assert token == sign_by_hand(K1, "p", "kid_1", body.encode())
    assert unseal("p", kr, token, now=NOW, max_bytes=2048) == claims


def test_hand_built_token_verifies() -> None:
    kr = Keyring.single(K1)
    token = sign_by_hand(K1, "p", "k1", b'{"e":1700000001,"x":"y"}')
    assert unseal("p", kr, token, now=NOW, max_bytes=2048) == {"e": NOW + 1, "x": "y"}


# --- rotation ------------------------------------------------------------------------------


def test_rotation_old_tokens_verify_with_both_keys() -> None:
    old = Keyring({"k1": K1}, "k1")
    both = Keyring({"k2": K2, "k1": K1}, "k2")
    new_only = Keyring({"k2": K2}, "k2")
    old_token = encode_context(decision(), old, now=NOW)
    assert old_token is not None
    assert old_token.startswith("1.k1.")
    assert isinstance(decode_context(old_token, both, now=NOW), RoutingContext)
    new_token = encode_context(decision(), both, now=NOW)
    assert new_token is not None
    assert new_token.startswith("1.k2.")
    assert isinstance(decode_context(new_token, new_only, now=NOW), RoutingContext)
    got = decode_context(old_token, new_only, now=NOW)
    assert isinstance(got, Rejected)
    assert got.kind is RejectKind.UNKNOWN_KEY
    assert "'k1'" in got.message
    # an old keyring does not know the new key either
    got = decode_context(new_token, old, now=NOW)
    assert isinstance(got, Rejected)
    assert got.kind is RejectKind.UNKNOWN_KEY


def test_same_kid_different_key_is_a_bad_signature() -> None:
    token = encode_context(decision(), Keyring.single(K1), now=NOW)
    got = decode_context(token, Keyring.single(K2), now=NOW)
    assert isinstance(got, Rejected)
    assert got.kind is RejectKind.BAD_SIGNATURE


def test_rotation_for_overrides() -> None:
    token = issue_override(
        Keyring.single(K1, "k1"), app="shop", channel=Channel.CANARY, now=NOW, ttl=60
    )
    assert (
        decode_override(token, Keyring({"k2": K2, "k1": K1}, "k2"), now=NOW).channel
        is Channel.CANARY
    )  # type: ignore[union-attr]
    got = decode_override(token, Keyring.single(K2, "k2"), now=NOW)
    assert isinstance(got, Rejected)
    assert got.kind is RejectKind.UNKNOWN_KEY


# --- purpose separation ----------------------------------------------------------------------


def test_override_token_is_not_a_context() -> None:
    kr = Keyring.single(K1)
    token = issue_override(kr, app="shop", channel=Channel.CANARY, now=NOW, ttl=60, release_id="r1")
    got = decode_context(token, kr, now=NOW)
    assert isinstance(got, Rejected)
    assert got.kind is RejectKind.BAD_SIGNATURE


def test_context_token_is_not_an_override() -> None:
    kr = Keyring.single(K1)
    token = encode_context(decision(), kr, now=NOW)
    got = decode_override(token, kr, now=NOW)
    assert isinstance(got, Rejected)
    assert got.kind is RejectKind.BAD_SIGNATURE


def test_purposes_differ() -> None:
    assert CONTEXT_PURPOSE == "coalmine-context"
    assert OVERRIDE_PURPOSE == "coalmine-override"
    claims = {"e": NOW + 10}
    kr = Keyring.single(K1)
    assert seal(CONTEXT_PURPOSE, kr, claims) != seal(OVERRIDE_PURPOSE, kr, claims)


# --- expiry ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "valid"),
    [
        (NOW + 99, True),
        (NOW + 99.999, True),
        (NOW + 100, False),
        (NOW + 100.0, False),
        (NOW + 101, False),
    ],
)
def test_expiry_boundary(now: float, valid: bool) -> None:
    kr = Keyring.single(K1)
    token = seal("p", kr, {"e": NOW + 100})
    got = unseal("p", kr, token, now=now, max_bytes=2048)
    if valid:
        assert got == {"e": NOW + 100}
    else:
        assert isinstance(got, Rejected)
        assert got.kind is RejectKind.EXPIRED


def test_context_expiry_boundary() -> None:
    kr = Keyring.single(K1)
    token = encode_context(decision(), kr, now=NOW, ttl=30)
    ok = decode_context(token, kr, now=NOW + 29)
    assert isinstance(ok, RoutingContext)
    assert ok.expires_at == NOW + 30
    got = decode_context(token, kr, now=NOW + 30)
    assert isinstance(got, Rejected)
    assert got.kind is RejectKind.EXPIRED


def test_override_expiry_boundary() -> None:
    kr = Keyring.single(K1)
    token = issue_override(kr, app="shop", channel=Channel.STABLE, now=NOW, ttl=30)
    assert not isinstance(decode_override(token, kr, now=NOW + 29), Rejected)
    got = decode_override(token, kr, now=NOW + 30)
    assert isinstance(got, Rejected)
    assert got.kind is RejectKind.EXPIRED


# --- rejections ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "kind"),
    [
        (None, RejectKind.MALFORMED),
        (123, RejectKind.MALFORMED),
        (b"1.k1.abc.def", RejectKind.MALFORMED),
        ("", RejectKind.MALFORMED),
        ("1", RejectKind.MALFORMED),
        ("1.k1", RejectKind.MALFORMED),
        ("1.k1.abc", RejectKind.MALFORMED),
        ("1.k1.abc.tooshort", RejectKind.MALFORMED),
        ("1.k1..AAAAAAAAAAAAAAAAAAAAAA", RejectKind.MALFORMED),
        ("1.k1.a=b.AAAAAAAAAAAAAAAAAAAAAA", RejectKind.MALFORMED),
        ("1.k1.abc.AAAAAAAAAAAAAAAAAAAAAA.x", RejectKind.MALFORMED),
        ("1.k1.abc.AAAAAAAAAAAAAAAAAAAAAA\n", RejectKind.MALFORMED),
        ("2.k1.x.y", RejectKind.UNSUPPORTED_VERSION),
        ("0.k1.abc.AAAAAAAAAAAAAAAAAAAAAA", RejectKind.UNSUPPORTED_VERSION),
        ("v1.k1.abc.AAAAAAAAAAAAAAAAAAAAAA", RejectKind.UNSUPPORTED_VERSION),
        ("1.nokey.abc.AAAAAAAAAAAAAAAAAAAAAA", RejectKind.UNKNOWN_KEY),
        ("1.k1.abc.AAAAAAAAAAAAAAAAAAAAAA", RejectKind.BAD_SIGNATURE),
    ],
)
def test_rejections(token: object, kind: RejectKind) -> None:
    got = unseal("p", Keyring.single(K1), token, now=NOW, max_bytes=2048)
    assert isinstance(got, Rejected)
    assert got.kind is kind
    assert got.message


def test_unsupported_version_message_names_it() -> None:
    got = unseal("p", Keyring.single(K1), "2.k1.x.y", now=NOW, max_bytes=2048)
    assert isinstance(got, Rejected)
    assert "'2'" in got.message


def test_oversized() -> None:
    kr = Keyring.single(K1)
    token = seal("p", kr, {"e": NOW + 10, "pad": "x" * 300})
    assert isinstance(unseal("p", kr, token, now=NOW, max_bytes=len(token)), dict)
    got = unseal("p", kr, token, now=NOW, max_bytes=len(token) - 1)
    assert isinstance(got, Rejected)
    assert got.kind is RejectKind.OVERSIZED
    assert str(len(token)) in got.message
    huge = decode_context("1.k1." + "A" * 5000 + ".AAAAAAAAAAAAAAAAAAAAAA", kr, now=NOW)
    assert isinstance(huge, Rejected)
    assert huge.kind is RejectKind.OVERSIZED


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"not json", RejectKind.MALFORMED),
        (b"\xff\xfe{}", RejectKind.MALFORMED),
        (b"[1, 2]", RejectKind.INVALID),
        (b'"e"', RejectKind.INVALID),
        (b"{}", RejectKind.INVALID),
        (b'{"e": true}', RejectKind.INVALID),
        (b'{"e": 1.7e9}', RejectKind.INVALID),
        (b'{"e": "1800000000"}', RejectKind.INVALID),
        (b'{"e": null}', RejectKind.INVALID),
    ],
)
def test_correctly_signed_bad_payloads(payload: bytes, kind: RejectKind) -> None:
    token = sign_by_hand(K1, "p", "k1", payload)
    got = unseal("p", Keyring.single(K1), token, now=NOW, max_bytes=2048)
    assert isinstance(got, Rejected)
    assert got.kind is kind


def test_payload_that_is_not_base64_is_malformed() -> None:
    # 5 characters cannot be base64 of anything; sign it anyway
    signed = "1.k1.AAAAA"
    mac = hmac.new(K1, b"p\x00" + signed.encode(), hashlib.sha256).digest()[:16]
    got = unseal("p", Keyring.single(K1), f"{signed}.{b64e(mac)}", now=NOW, max_bytes=2048)
    assert isinstance(got, Rejected)
    assert got.kind is RejectKind.MALFORMED


def test_every_other_spelling_of_the_signature_is_rejected() -> None:
    """Base64 decoding ignores the 4 low bits of the 22nd character; verification must not."""
    kr = Keyring.single(K1)
    token = seal("p", kr, {"e": NOW + 100})
    head, sig = token.rsplit(".", 1)
    accepted = [
        f"{i}:{c}"
        for i in range(len(sig))
        for c in B64URL
        if c != sig[i]
        and not isinstance(
            unseal("p", kr, f"{head}.{sig[:i]}{c}{sig[i + 1 :]}", now=NOW, max_bytes=2048),
            Rejected,
        )
    ]
    assert accepted == []


# --- the per-request fast path: KeyedMac, Sealer -------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    key=st.binary(min_size=16, max_size=200),  # past the 64-byte block: the key is hashed
    prefix=st.binary(max_size=40),
    message=st.binary(max_size=300),
)
def test_keyed_mac_is_hmac_sha256(key: bytes, prefix: bytes, message: bytes) -> None:
    mac = KeyedMac(key, prefix)
    expected = hmac.new(key, prefix + message, hashlib.sha256).digest()
    assert mac.digest(message) == expected
    assert mac.digest(message) == expected  # keyed once, used many times


@settings(max_examples=200, deadline=None)
@given(
    claims=st.dictionaries(
        st.text(max_size=5),
        st.one_of(st.integers(), st.text(max_size=10), st.lists(st.integers(), max_size=3)),
        max_size=5,
    )
)
def test_sealer_signs_as_the_documented_envelope(claims: dict[str, Any]) -> None:
    ring = Keyring({"k1": K1}, "k1")
    body = json.dumps(claims, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    signed = f"1.k1.{b64e(body.encode())}"
    mac = hmac.new(K1, b"coalmine-context\x00" + signed.encode(), hashlib.sha256).digest()
    expected = f"{signed}.{b64e(mac[:16])}"
    assert seal("coalmine-context", ring, claims) == expected
    assert Sealer("coalmine-context", ring).seal_json(claims_json(claims)) == expected
