"""The routing context: wire vectors, baggage handling, OpenTelemetry interop, properties."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import baggage as otel_baggage
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context

from coalmine.core import (
    BAGGAGE_KEY,
    Channel,
    Decision,
    InvalidInput,
    Keyring,
    Reason,
    Rejected,
    RejectKind,
    RoutingContext,
    decode_context,
    encode_context,
    find_in_baggage,
    set_in_baggage,
)
from coalmine.core.context import (
    DEFAULT_TTL_SECONDS,
    MAX_BAGGAGE_BYTES,
    MAX_CONTEXT_BYTES,
    ContextTooLarge,
)
from coalmine.core.model import NAME_PATTERN, VERSION_PATTERN
from coalmine.core.signing import seal

DATA = Path(__file__).resolve().parent.parent / "data"
VECTORS: dict[str, Any] = json.loads((DATA / "context_vectors.json").read_bytes().decode("utf-8"))
VECTOR_KEYRING = Keyring({VECTORS["kid"]: bytes.fromhex(VECTORS["key_hex"])}, VECTORS["kid"])
KEYRING = Keyring.single(b"context-test-secret-0123456789")
NOW = 1_700_000_000


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _decision(v: dict[str, Any]) -> Decision:
    return Decision(v["app"], v["release_id"], Channel(v["channel"]), v["versions"], Reason.COHORT)


# --- wire vectors ----------------------------------------------------------------------------


def test_vector_file_shape() -> None:
    assert len(VECTORS["valid"]) >= 5
    assert {Channel(v["channel"]) for v in VECTORS["valid"]} == set(Channel)
    assert any("user" in v for v in VECTORS["valid"])
    assert any("user" not in v for v in VECTORS["valid"])  # as older coalmines signed them
    # every way decoding rejects has a vector (``stale`` is routing's: it weighs a valid
    # context against a snapshot, tests/core/test_routing.py)
    assert {RejectKind(v["reject"]) for v in VECTORS["invalid"]} == set(RejectKind) - {
        RejectKind.STALE
    }
    assert len({v["case"] for v in VECTORS["invalid"]}) == len(VECTORS["invalid"])


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda v: f"{v['app']}-{v['channel']}")
def test_valid_vector_encodes_byte_for_byte(vector: dict[str, Any]) -> None:
    token = encode_context(
        _decision(vector),
        VECTOR_KEYRING,
        now=vector["now"],
        ttl=vector["ttl"],
        user=vector.get("user"),
    )
    assert token == vector["encoded"]


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda v: f"{v['app']}-{v['channel']}")
def test_valid_vector_matches_the_documented_format(vector: dict[str, Any]) -> None:
    """Rebuild the token from the docstrings alone (no coalmine code)."""
    claims = {
        "a": vector["app"],
        "r": vector["release_id"],
        "c": {"canary": "c", "stable": "s"}[vector["channel"]],
        "v": vector["versions"],
        "e": vector["now"] + vector["ttl"],
    }
    key = bytes.fromhex(VECTORS["key_hex"])
    if "user" in vector:
        tag = hmac.new(key, b"coalmine-user\x00" + vector["user"].encode(), hashlib.sha256)
        claims["u"] = f"{VECTORS['kid']}.{b64e(tag.digest()[:12])}"
        assert claims["u"] == vector["binding"]
    payload = json.dumps(claims, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    signed = f"1.{VECTORS['kid']}.{b64e(payload.encode())}"
    mac = hmac.new(key, b"coalmine-context\x00" + signed.encode(), hashlib.sha256).digest()
    assert f"{signed}.{b64e(mac[:16])}" == vector["encoded"]


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda v: f"{v['app']}-{v['channel']}")
def test_valid_vector_decodes(vector: dict[str, Any]) -> None:
    for now in (vector["now"], vector["expires_at"] - 1):
        for hop_user in (None, vector.get("user")):  # a hop without a user; one serving it
            got = decode_context(vector["encoded"], VECTOR_KEYRING, now=now, user=hop_user)
            assert got == RoutingContext(
                vector["app"],
                vector["release_id"],
                Channel(vector["channel"]),
                vector["versions"],
                vector["expires_at"],
                vector.get("binding"),
            )
    expired = decode_context(vector["encoded"], VECTOR_KEYRING, now=vector["expires_at"])
    assert isinstance(expired, Rejected)
    assert expired.kind is RejectKind.EXPIRED


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda v: v["case"])
def test_invalid_vector_is_rejected(vector: dict[str, Any]) -> None:
    user = vector.get("user")
    got = decode_context(vector["encoded"], VECTOR_KEYRING, now=vector["now"], user=user)
    assert isinstance(got, Rejected)
    assert got.kind == vector["reject"]
    assert got.message
    if user is not None:  # rejected only where the hop knows its user
        assert isinstance(
            decode_context(vector["encoded"], VECTOR_KEYRING, now=vector["now"]), RoutingContext
        )


# --- encode / decode -------------------------------------------------------------------------


def test_decision_without_release_is_not_propagated() -> None:
    for reason in (Reason.NO_RELEASE, Reason.ERROR):
        d = Decision("shop", None, Channel.STABLE, {"cart": "v1"}, reason)
        assert encode_context(d, KEYRING, now=NOW) is None


def test_default_ttl() -> None:
    d = Decision("shop", "r1", Channel.CANARY, {"cart": "v2"}, Reason.COHORT)
    got = decode_context(encode_context(d, KEYRING, now=NOW + 0.9), KEYRING, now=NOW)
    assert isinstance(got, RoutingContext)
    assert got.expires_at == NOW + DEFAULT_TTL_SECONDS == NOW + 3600


def test_context_too_large() -> None:
    versions = {f"{i:02d}" + "f" * 61: "v" * 64 for i in range(20)}
    d = Decision("a" * 63, "r" * 64, Channel.CANARY, versions, Reason.COHORT)
    with pytest.raises(ContextTooLarge, match="2048-byte limit") as info:
        encode_context(d, KEYRING, now=NOW)
    assert isinstance(info.value, InvalidInput)
    assert isinstance(info.value, ValueError)


def test_decode_never_accepts_non_strings() -> None:
    for value in (None, 42, b"1.k1.a.b", ["1.k1.a.b"], object()):
        got = decode_context(value, KEYRING, now=NOW)
        assert isinstance(got, Rejected)
        assert got.kind is RejectKind.MALFORMED


names = st.from_regex(NAME_PATTERN, fullmatch=True)
version_names = st.from_regex(VERSION_PATTERN, fullmatch=True)
decisions = st.builds(
    Decision,
    app=names,
    release_id=version_names,
    channel=st.sampled_from(list(Channel)),
    versions=st.dictionaries(names, version_names, min_size=1, max_size=8),
    reason=st.sampled_from(list(Reason)),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=decisions, now=st.integers(0, 2**40), ttl=st.integers(1, 10**6))
def test_round_trip(d: Decision, now: int, ttl: int) -> None:
    token = encode_context(d, KEYRING, now=now, ttl=ttl)
    assert token is not None
    assert len(token) <= MAX_CONTEXT_BYTES
    assert token.isascii()
    got = decode_context(token, KEYRING, now=now + ttl - 1)
    assert isinstance(got, RoutingContext)
    assert (got.app, got.release_id, got.channel, dict(got.versions), got.expires_at) == (
        d.app,
        d.release_id,
        d.channel,
        dict(d.versions),
        now + ttl,
    )


FIXED = encode_context(
    Decision("shop", "r-1.2", Channel.CANARY, {"cart": "v2", "pay": "v1"}, Reason.COHORT),
    KEYRING,
    now=NOW,
)
assert FIXED is not None


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=decisions, data=st.data())
def test_any_single_character_tamper_is_rejected(d: Decision, data: st.DataObject) -> None:
    token = encode_context(d, KEYRING, now=NOW)
    assert token is not None
    i = data.draw(st.integers(0, len(token) - 1), label="position")
    c = data.draw(
        st.one_of(st.sampled_from(string.ascii_letters + string.digits + "-_.="), st.characters()),
        label="replacement",
    )
    if c == token[i]:
        return
    got = decode_context(token[:i] + c + token[i + 1 :], KEYRING, now=NOW)
    assert isinstance(got, Rejected)


def test_every_single_character_tamper_of_a_fixed_token_is_rejected() -> None:
    assert FIXED is not None
    alphabet = string.ascii_letters + string.digits + "-_.=+/ é"
    sig_start = FIXED.rindex(".") + 1
    accepted, wrong_kind = [], []
    for i, original in enumerate(FIXED):
        for c in alphabet:
            if c == original:
                continue
            got = decode_context(FIXED[:i] + c + FIXED[i + 1 :], KEYRING, now=NOW)
            if not isinstance(got, Rejected):
                accepted.append((i, c))
            elif i >= sig_start and c.isalnum() and c.isascii() and got.kind != "bad_signature":
                wrong_kind.append((i, c, got.kind))
    assert accepted == []
    assert wrong_kind == []


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.from_regex(r"1\.k1\.[A-Za-z0-9_-]{1,60}\.[A-Za-z0-9_-]{22}", fullmatch=True),
        st.from_regex(r"[0-9]\.[a-z0-9]{1,3}\.[^.]*\.[^.]*", fullmatch=True),
    )
)
def test_decode_never_raises_on_any_text(text: str) -> None:
    got = decode_context(text, KEYRING, now=NOW)
    assert isinstance(got, Rejected)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(
    claims=st.fixed_dictionaries(
        {"e": st.just(NOW + 60)},
        optional={
            "a": st.one_of(names, json_values),
            "r": st.one_of(version_names, json_values),
            "c": st.one_of(st.sampled_from(["c", "s", "x"]), json_values),
            "v": st.one_of(st.dictionaries(names, version_names, max_size=3), json_values),
            "extra": json_values,
        },
    )
)
def test_decode_never_raises_on_any_signed_claims(claims: dict[str, Any]) -> None:
    got = decode_context(seal("coalmine-context", KEYRING, claims), KEYRING, now=NOW)
    if isinstance(got, Rejected):
        assert got.kind is RejectKind.INVALID
    else:
        assert isinstance(got, RoutingContext)
        assert got.channel is {"c": Channel.CANARY, "s": Channel.STABLE}[claims["c"]]


# --- find_in_baggage / set_in_baggage ---------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("coalmine=tok", "tok"),
        ("a=1,coalmine=tok,b=2", "tok"),
        ("a=1 , coalmine = tok ;prop=x;flag , b=2", "tok"),
        ("coalmine=a%2Cb%3Dc", "a,b=c"),
        ("coalmine2=tok", None),
        ("xcoalmine=tok", None),
        ("coalmine", None),
        ("Coalmine=tok", None),
        ("coalmine=first,coalmine=second", "first"),
        ("a=1," + "x" * MAX_BAGGAGE_BYTES + ",coalmine=tok", None),
    ],
)
def test_find_in_baggage(header: str | None, expected: str | None) -> None:
    assert find_in_baggage(header) == expected


def test_find_in_baggage_other_key() -> None:
    assert find_in_baggage("a=1,b=2", key="b") == "2"


@pytest.mark.parametrize(
    ("header", "value", "expected"),
    [
        (None, "tok", "coalmine=tok"),
        ("", "tok", "coalmine=tok"),
        ("a=1,b=2", "tok", "a=1,b=2,coalmine=tok"),
        ("a=1,coalmine=old,b=2", "new", "a=1,b=2,coalmine=new"),
        ("a=1 , coalmine=old;p=1 , b=2;q", "new", "a=1,b=2;q,coalmine=new"),
        ("a=1,coalmine=old,b=2", None, "a=1,b=2"),
        ("coalmine=old", None, ""),
        (None, None, ""),
        ("coalmine2=keep,coalmine=old", "new", "coalmine2=keep,coalmine=new"),
    ],
)
def test_set_in_baggage(header: str | None, value: str | None, expected: str) -> None:
    assert set_in_baggage(header, value) == expected


def test_set_in_baggage_respects_the_member_limit() -> None:
    header = ",".join(f"k{i}=v{i}" for i in range(180))
    out = set_in_baggage(header, "tok")
    members = out.split(",")
    assert len(members) == 180
    assert members[0] == "k1=v1"  # the oldest foreign member went first
    assert members[-2:] == ["k179=v179", "coalmine=tok"]
    # removal also brings an over-full header back under the limit
    assert len(set_in_baggage(header + ",k180=v180", None).split(",")) == 180


def test_set_in_baggage_respects_the_byte_limit() -> None:
    big = [f"m{i}=" + "x" * 3000 for i in range(3)]
    token = "t" * 500
    out = set_in_baggage(",".join(big), token)
    assert len(out.encode()) <= MAX_BAGGAGE_BYTES
    assert out.split(",") == [big[1], big[2], f"coalmine={token}"]
    assert find_in_baggage(out) == token


def test_set_in_baggage_limit_is_in_bytes_not_characters() -> None:
    # 3 x 2000 two-byte characters: 6,000 characters but 12,000 bytes
    big = [f"m{i}=" + "é" * 2000 for i in range(3)]
    out = set_in_baggage(",".join(big), "tok")
    assert len(out.encode()) <= MAX_BAGGAGE_BYTES
    assert out.split(",") == [big[1], big[2], "coalmine=tok"]
    # and a header with a lone surrogate (e.g. decoded with surrogateescape) does not crash
    assert set_in_baggage("a=" + chr(0xDC80), "tok") == "a=" + chr(0xDC80) + ",coalmine=tok"


def test_set_in_baggage_keeps_a_header_that_fits() -> None:
    members = [f"m{i}=" + "x" * 100 for i in range(60)]
    out = set_in_baggage(",".join(members), "tok")
    assert out.split(",") == [*members, "coalmine=tok"]


# --- OpenTelemetry interop -------------------------------------------------------------------


def test_otel_propagator_round_trip() -> None:
    assert FIXED is not None
    ctx = otel_baggage.set_baggage(BAGGAGE_KEY, FIXED, context=Context())
    carrier: dict[str, str] = {}
    W3CBaggagePropagator().inject(carrier, context=ctx)
    assert find_in_baggage(carrier["baggage"]) == FIXED
    back = W3CBaggagePropagator().extract(carrier, context=Context())
    assert otel_baggage.get_baggage(BAGGAGE_KEY, context=back) == FIXED
    got = decode_context(otel_baggage.get_baggage(BAGGAGE_KEY, context=back), KEYRING, now=NOW)
    assert isinstance(got, RoutingContext)
    assert got.channel is Channel.CANARY


def test_otel_reads_a_header_built_by_set_in_baggage() -> None:
    assert FIXED is not None
    foreign = "userId=alice,isProduction=false,coalmine=stale"
    header = set_in_baggage(foreign, FIXED)
    back = W3CBaggagePropagator().extract({"baggage": header}, context=Context())
    assert otel_baggage.get_all(context=back) == {
        "userId": "alice",
        "isProduction": "false",
        BAGGAGE_KEY: FIXED,
    }


def test_otel_header_with_other_members_is_read_by_find_in_baggage() -> None:
    assert FIXED is not None
    ctx = otel_baggage.set_baggage("tenant", "acme", context=Context())
    ctx = otel_baggage.set_baggage(BAGGAGE_KEY, FIXED, context=ctx)
    carrier: dict[str, str] = {}
    W3CBaggagePropagator().inject(carrier, context=ctx)
    assert find_in_baggage(carrier["baggage"]) == FIXED
    assert find_in_baggage(carrier["baggage"], key="tenant") == "acme"
