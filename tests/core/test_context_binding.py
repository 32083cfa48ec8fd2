"""A routing context grants its channel to the user it was decided for, and to no one else.

The context carries a keyed hash of that user's key (``u``); a hop that knows
whom it serves verifies it, and a context of another user (or one that names
no user, from an older coalmine) is not honoured there: the user is decided
afresh. A hop that does not know the user (a downstream consumer) honours
the context and passes its binding on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coalmine.core.context import (
    ContextSigner,
    RoutingContext,
    bind_user,
    bound,
    check_user,
    decode_context,
    encode_context,
)
from coalmine.core.model import (
    Channel,
    Decision,
    Phase,
    Reason,
    Release,
    RouteMode,
    Targeting,
)
from coalmine.core.routing import RoutingState, decide, evaluate
from coalmine.core.signing import Keyring, Rejected, RejectKind
from coalmine.core.strategy import parse_strategy

KEYRING = Keyring.single(b"binding-test-secret-0123456789", kid="k1")
NOW = 1_700_000_000
CANARY = Decision("shop", "shop-1", Channel.CANARY, {"api": "v2"}, Reason.TARGETED)


def payload(token: str) -> dict[str, object]:
    part = token.split(".")[2]
    claims: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return claims


def test_a_context_names_its_user_by_a_keyed_hash_only() -> None:
    token = encode_context(CANARY, KEYRING, now=NOW, user="tester@example.com")
    assert token is not None
    claims = payload(token)
    assert "tester@example.com" not in token
    assert "tester" not in json.dumps(claims)
    # the documented form: <kid>.<b64url(HMAC-SHA256(key, "coalmine-user" 0x00 user)[:12])>
    mac = hmac.new(
        b"binding-test-secret-0123456789",
        b"coalmine-user\x00" + b"tester@example.com",
        hashlib.sha256,
    ).digest()[:12]
    assert claims["u"] == "k1." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    assert claims["u"] == bind_user(KEYRING, "tester@example.com")


def test_the_user_it_was_decided_for_gets_it_and_another_does_not() -> None:
    token = encode_context(CANARY, KEYRING, now=NOW, user="tester")
    got = decode_context(token, KEYRING, now=NOW, user="tester")
    assert isinstance(got, RoutingContext)
    assert got.channel is Channel.CANARY
    other = decode_context(token, KEYRING, now=NOW, user="mallory")
    assert isinstance(other, Rejected)
    assert other.kind is RejectKind.OTHER_USER
    assert "another user" in other.message


def test_a_hop_that_does_not_know_the_user_honours_the_context_and_keeps_its_binding() -> None:
    token = encode_context(CANARY, KEYRING, now=NOW, user="tester")
    got = decode_context(token, KEYRING, now=NOW)
    assert isinstance(got, RoutingContext)
    assert got.binding == bind_user(KEYRING, "tester")


def test_an_unbound_context_is_refused_where_the_user_is_known() -> None:
    """A context signed before contexts named their user (a rolling upgrade)."""
    old = encode_context(CANARY, KEYRING, now=NOW)  # no user: what an older coalmine signed
    assert "u" not in payload(old or "")
    refused = decode_context(old, KEYRING, now=NOW, user="anyone")
    assert isinstance(refused, Rejected)
    assert refused.kind is RejectKind.UNBOUND
    assert "names no user" in refused.message
    got = decode_context(old, KEYRING, now=NOW)
    assert isinstance(got, RoutingContext)
    assert got.binding is None


def test_a_binding_under_a_key_the_hop_does_not_hold_is_refused() -> None:
    rotated = Keyring({"k2": b"the-next-secret-0123456789", "k1": KEYRING.keys["k1"]}, "k2")
    token = encode_context(CANARY, KEYRING, now=NOW, user="tester")
    # signed (and bound) with k1: a ring that still holds k1 checks it
    assert isinstance(decode_context(token, rotated, now=NOW, user="tester"), RoutingContext)
    bound_k2 = RoutingContext("shop", "shop-1", Channel.CANARY, {"api": "v2"}, NOW + 60, "k2.x")
    refused = check_user(bound_k2, KEYRING, "tester")
    assert isinstance(refused, Rejected)
    assert refused.kind is RejectKind.UNKNOWN_KEY


def test_a_malformed_binding_is_invalid() -> None:
    from coalmine.core.signing import seal

    base = {"a": "shop", "r": "shop-1", "c": "c", "v": {"api": "v2"}, "e": NOW + 60}
    for bad in (1, "", "k1", "k1.short", ["k1.x"], "k 1.AAAAAAAAAAAAAAAA"):
        got = decode_context(
            seal("coalmine-context", KEYRING, {**base, "u": bad}), KEYRING, now=NOW
        )
        assert isinstance(got, Rejected), bad
        assert got.kind is RejectKind.INVALID


users = st.text(min_size=1, max_size=40)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(owner=users, caller=users)
def test_only_the_owner_is_granted_the_context(owner: str, caller: str) -> None:
    token = encode_context(CANARY, KEYRING, now=NOW, user=owner)
    got = decode_context(token, KEYRING, now=NOW, user=caller)
    if caller == owner:
        assert isinstance(got, RoutingContext)
    else:
        assert isinstance(got, Rejected)
        assert got.kind is RejectKind.OTHER_USER


# --- routing: a tester's context laundered to someone else ------------------------------------

RELEASE = Release(
    id="shop-1",
    app="shop",
    baseline={"api": "v1"},
    candidate={"api": "v2"},
    salt="salt-1",
    strategy=parse_strategy("AllAtOnce"),
    phase=Phase.RUNNING,
    exposure=0,  # nobody is canary by cohort: only the tester, by targeting
    route_mode=RouteMode.USER,
)


def state() -> RoutingState:
    rel = replace(RELEASE, targeting=Targeting(always_canary=frozenset({"tester"})))
    return RoutingState("shop", {"api": "v1"}, rel)


def test_a_testers_context_replayed_by_another_user_lands_them_in_stable() -> None:
    s = state()
    tester = evaluate(s, "tester", keyring=KEYRING, now=NOW)
    assert (tester.channel, tester.reason) == (Channel.CANARY, Reason.TARGETED)
    laundered = encode_context(tester, KEYRING, now=NOW, user="tester")

    for someone in ("mallory", "anon-c2lnbmVkLWJ5LW5vYm9keQ"):
        d = evaluate(s, someone, keyring=KEYRING, now=NOW, context=laundered)
        assert (d.channel, d.reason) == (Channel.STABLE, Reason.COHORT), someone
        assert d.detail is not None
        assert "routing context ignored (other_user)" in d.detail
    # the tester's own later hops keep the channel
    again = evaluate(s, "tester", keyring=KEYRING, now=NOW, context=laundered)
    assert (again.channel, again.reason) == (Channel.CANARY, Reason.PINNED)


def test_an_override_for_one_tester_does_not_become_a_context_for_everyone() -> None:
    from coalmine.core.override import issue_override

    s = state()
    override = issue_override(
        KEYRING, app="shop", channel=Channel.CANARY, now=NOW, ttl=600, user_key="tester"
    )
    d = evaluate(s, "tester", keyring=KEYRING, now=NOW, override=override)
    assert d.reason is Reason.OVERRIDE
    token = encode_context(d, KEYRING, now=NOW, user="tester")
    other = evaluate(s, "mallory", keyring=KEYRING, now=NOW, context=token)
    assert other.channel is Channel.STABLE


def test_a_pinned_decision_carries_the_binding_a_userless_hop_passes_on() -> None:
    s = state()
    token = encode_context(
        evaluate(s, "tester", keyring=KEYRING, now=NOW), KEYRING, now=NOW, user="tester"
    )
    # a consumer of a header-less stream: it does not know the user
    middle = evaluate(s, None, keyring=KEYRING, now=NOW, context=token)
    assert (middle.channel, middle.reason) == (Channel.CANARY, Reason.PINNED)
    assert middle.binding == bind_user(KEYRING, "tester")
    onward = encode_context(middle, KEYRING, now=NOW + 5)  # the hop has no user to bind
    assert onward is not None
    last = evaluate(s, "tester", keyring=KEYRING, now=NOW + 5, context=onward)
    assert (last.channel, last.reason) == (Channel.CANARY, Reason.PINNED)
    assert evaluate(s, "mallory", keyring=KEYRING, now=NOW + 5, context=onward).channel is (
        Channel.STABLE
    )


def test_decide_with_a_verified_context_keeps_its_binding_on_every_path() -> None:
    ctx = RoutingContext("shop", "shop-1", Channel.CANARY, {"api": "v2"}, NOW + 60, "k1.b")
    # the current release
    assert decide(state(), None, ctx).binding == "k1.b"
    # a release this process has not seen yet
    assert decide(RoutingState("shop", {"api": "v1"}), None, ctx).binding == "k1.b"
    # a rolled-back release: the canary chain goes to its baseline, still bound
    later = replace(RELEASE, id="shop-2")
    rolled = RoutingState("shop", {"api": "v1"}, later, rolled_back={"shop-1": {"api": "v1"}})
    d = decide(rolled, None, ctx)
    assert (d.reason, d.binding) == (Reason.ROLLED_BACK, "k1.b")
    # decisions without a context carry none
    assert decide(state(), "someone").binding is None


def test_evaluate_tells_who_counts_each_rejection_its_kind() -> None:
    seen: list[tuple[str, RejectKind]] = []
    token = encode_context(CANARY, KEYRING, now=NOW, user="tester")
    evaluate(
        state(),
        "mallory",
        keyring=KEYRING,
        now=NOW,
        context=token,
        override="garbage",
        on_rejected=lambda what, rejected: seen.append((what, rejected.kind)),
    )
    assert seen == [
        ("routing context", RejectKind.OTHER_USER),
        ("override", RejectKind.MALFORMED),
    ]


@settings(max_examples=100, deadline=None)
@given(user=st.one_of(st.none(), users), expires=st.integers(0, 2**40))
def test_a_signer_signs_what_encode_context_signs(user: str | None, expires: int) -> None:
    signer = ContextSigner(CANARY, KEYRING, expires_at=expires)
    assert signer.sign(user) == encode_context(CANARY, KEYRING, now=expires, ttl=0, user=user)


def test_bound_records_the_user_in_the_decision_once() -> None:
    d = bound(CANARY, KEYRING, "tester")
    assert d.binding == bind_user(KEYRING, "tester")
    assert d == CANARY  # not part of the answer
    assert bound(d, KEYRING, "someone-else").binding == d.binding  # pinned: kept
    assert bound(CANARY, None, "tester").binding is None
    assert bound(CANARY, KEYRING, None).binding is None
    no_release = Decision("shop", None, Channel.STABLE, {"api": "v1"}, Reason.NO_RELEASE)
    assert bound(no_release, KEYRING, "tester").binding is None
    # the context signed from it, with no user named, is the tester's
    token = encode_context(d, KEYRING, now=NOW)
    assert isinstance(decode_context(token, KEYRING, now=NOW, user="tester"), RoutingContext)
    assert isinstance(decode_context(token, KEYRING, now=NOW, user="mallory"), Rejected)
