"""Tester overrides: issuing, verifying, and when they apply."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalmine.core import (
    Channel,
    InvalidInput,
    Keyring,
    Override,
    Rejected,
    RejectKind,
    decode_override,
    issue_override,
)
from coalmine.core.override import MAX_OVERRIDE_BYTES
from coalmine.core.signing import seal

KEYRING = Keyring.single(b"override-test-secret-0123456789")
NOW = 1_700_000_000


def test_round_trip_unbound() -> None:
    token = issue_override(KEYRING, app="shop", channel=Channel.CANARY, now=NOW, ttl=600)
    got = decode_override(token, KEYRING, now=NOW)
    assert got == Override("shop", Channel.CANARY, None, None, NOW + 600)


def test_round_trip_bound() -> None:
    token = issue_override(
        KEYRING,
        app="shop",
        channel="stable",  # type: ignore[arg-type]
        now=NOW + 0.7,
        ttl=60.9,
        release_id="r-7",
        user_key="alice@example.com",
    )
    got = decode_override(token, KEYRING, now=NOW)
    assert got == Override("shop", Channel.STABLE, "r-7", "alice@example.com", NOW + 61)


def test_unicode_user_key_round_trips() -> None:
    token = issue_override(
        KEYRING, app="shop", channel=Channel.CANARY, now=NOW, ttl=60, user_key="José 用户 😀"
    )
    assert token.isascii()
    got = decode_override(token, KEYRING, now=NOW)
    assert isinstance(got, Override)
    assert got.user_key == "José 用户 😀"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"app": "Shop"}, InvalidInput, "invalid app name 'Shop'"),
        ({"app": ""}, InvalidInput, "invalid app name"),
        ({"ttl": 0}, InvalidInput, "positive time to live"),
        ({"ttl": -5}, InvalidInput, "positive time to live"),
        ({"channel": "blue"}, ValueError, "blue"),
    ],
)
def test_issue_rejects(kwargs: dict[str, object], error: type[Exception], message: str) -> None:
    args: dict[str, object] = {"app": "shop", "channel": Channel.CANARY, "now": NOW, "ttl": 60}
    with pytest.raises(error, match=message):
        issue_override(KEYRING, **{**args, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("override", "app", "release_id", "user_key", "applies"),
    [
        (Override("shop", Channel.CANARY, None, None, 0), "shop", "r1", "u", True),
        (Override("shop", Channel.CANARY, None, None, 0), "shop", None, None, True),
        (Override("shop", Channel.CANARY, None, None, 0), "other", "r1", "u", False),
        (Override("shop", Channel.CANARY, "r1", None, 0), "shop", "r1", "anyone", True),
        (Override("shop", Channel.CANARY, "r1", None, 0), "shop", "r2", "anyone", False),
        (Override("shop", Channel.CANARY, "r1", None, 0), "shop", None, "anyone", False),
        (Override("shop", Channel.CANARY, None, "alice", 0), "shop", "r1", "alice", True),
        (Override("shop", Channel.CANARY, None, "alice", 0), "shop", "r1", "bob", False),
        (Override("shop", Channel.CANARY, None, "alice", 0), "shop", "r1", None, False),
        (Override("shop", Channel.CANARY, "r1", "alice", 0), "shop", "r1", "alice", True),
        (Override("shop", Channel.CANARY, "r1", "alice", 0), "shop", "r2", "alice", False),
    ],
)
def test_applies(
    override: Override, app: str, release_id: str | None, user_key: str | None, applies: bool
) -> None:
    assert override.applies(app, release_id, user_key) is applies


def test_expiry_boundary() -> None:
    token = issue_override(KEYRING, app="shop", channel=Channel.CANARY, now=NOW, ttl=10)
    assert isinstance(decode_override(token, KEYRING, now=NOW + 9), Override)
    got = decode_override(token, KEYRING, now=NOW + 10)
    assert isinstance(got, Rejected)
    assert got.kind is RejectKind.EXPIRED


def test_oversized() -> None:
    token = issue_override(
        KEYRING, app="shop", channel=Channel.CANARY, now=NOW, ttl=10, user_key="u" * 800
    )
    assert len(token) > MAX_OVERRIDE_BYTES == 1024
    got = decode_override(token, KEYRING, now=NOW)
    assert isinstance(got, Rejected)
    assert got.kind is RejectKind.OVERSIZED


def test_tampered() -> None:
    token = issue_override(KEYRING, app="shop", channel=Channel.STABLE, now=NOW, ttl=10)
    i = token.index(".", 2) + 3
    forged = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
    got = decode_override(forged, KEYRING, now=NOW)
    assert isinstance(got, Rejected)
    assert got.kind is RejectKind.BAD_SIGNATURE
    got = decode_override(None, KEYRING, now=NOW)
    assert isinstance(got, Rejected)
    assert got.kind is RejectKind.MALFORMED


@pytest.mark.parametrize(
    "claims",
    [
        {"a": 5, "c": "c", "r": None, "u": None},
        {"c": "c", "r": None, "u": None},
        {"a": "shop", "c": "x", "r": None, "u": None},
        {"a": "shop", "c": ["c"], "r": None, "u": None},
        {"a": "shop", "r": None, "u": None},
        {"a": "shop", "c": "c", "r": 7, "u": None},
        {"a": "shop", "c": "c", "r": None, "u": ["alice"]},
    ],
)
def test_invalid_claims(claims: dict[str, object]) -> None:
    token = seal("coalmine-override", KEYRING, {**claims, "e": NOW + 60})
    got = decode_override(token, KEYRING, now=NOW)
    assert isinstance(got, Rejected)
    assert got.kind is RejectKind.INVALID


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None)
@given(
    claims=st.fixed_dictionaries(
        {"e": st.just(NOW + 60)},
        optional={
            "a": st.one_of(st.just("shop"), json_values),
            "c": st.one_of(st.sampled_from(["c", "s"]), json_values),
            "r": json_values,
            "u": json_values,
        },
    )
)
def test_decode_never_raises_on_any_signed_claims(claims: dict[str, Any]) -> None:
    got = decode_override(seal("coalmine-override", KEYRING, claims), KEYRING, now=NOW)
    if isinstance(got, Rejected):
        assert got.kind is RejectKind.INVALID
    else:
        assert got.channel is {"c": Channel.CANARY, "s": Channel.STABLE}[claims["c"]]
