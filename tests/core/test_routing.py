"""The routing function: precedence, pinned chains, request mode, errors, properties."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalmine.core import (
    Channel,
    Decision,
    InvalidInput,
    Keyring,
    Override,
    Phase,
    Reason,
    Release,
    RouteMode,
    RoutingContext,
    RoutingState,
    Targeting,
    bucket,
    decide,
    decode_context,
    encode_context,
    evaluate,
    issue_override,
    parse_strategy,
)
from coalmine.core.bucketing import SALT_PATTERN
from coalmine.core.model import freeze_versions

APP = "shop"
SALT = "salt-1"
CURRENT = {"cart": "v1", "checkout": "v1", "notify": "v1"}
CANDIDATE = {"cart": "v2", "checkout": "v2", "notify": "v1"}
OLD_BASELINE = {"cart": "v0", "checkout": "v0", "notify": "v0"}  # baseline of rolled-back r0
KEYRING = Keyring.single(b"routing-test-secret-0123456789")
NOW = 1_700_000_000
TESTER, VIP = "tester", "vip"


def make_release(**changes: Any) -> Release:
    base = Release.start(
        id="r1",
        app=APP,
        current=CURRENT,
        changes={"cart": "v2", "checkout": "v2"},
        salt=SALT,
        strategy=parse_strategy("Canary10Percent5Minutes"),
        targeting=Targeting(always_canary=frozenset({TESTER}), never_canary=frozenset({VIP})),
    )
    return dataclasses.replace(base, **changes) if changes else base


def make_state(**changes: Any) -> RoutingState:
    return RoutingState(APP, CURRENT, make_release(**changes), rolled_back={"r0": OLD_BASELINE})


def running(exposure: int = 1000, **changes: Any) -> RoutingState:
    return make_state(phase=Phase.RUNNING, exposure=exposure, **changes)


def users_where(pred: Callable[[int], bool]) -> Iterator[str]:
    return (u for i in itertools.count() if pred(bucket(SALT, u := f"user-{i}")))


# users by their bucket for SALT
CANARY_USER = next(users_where(lambda b: b < 100))  # canary from 1% up
STABLE_USER = next(users_where(lambda b: b >= 9900))  # stable below 99%
MID_USER = next(users_where(lambda b: 1000 <= b < 5000))  # stable at 10%, canary at 50%


def ctx(
    channel: Channel, release_id: str = "r1", app: str = APP, versions: dict[str, str] | None = None
) -> RoutingContext:
    if versions is None:
        versions = CANDIDATE if channel is Channel.CANARY else CURRENT
    return RoutingContext(app, release_id, channel, freeze_versions(versions), NOW + 60)


def ovr(
    channel: Channel, app: str = APP, release_id: str | None = None, user: str | None = None
) -> Override:
    return Override(app, channel, release_id, user, NOW + 60)


C, S = Channel.CANARY, Channel.STABLE
UNKNOWN_VERSIONS = {"cart": "v5", "checkout": "v5", "notify": "v5"}

# (case, state kwargs, user, context, override, channel, versions, reason, release id)
PRECEDENCE: list[
    tuple[
        str,
        dict[str, Any],
        Any,
        RoutingContext | None,
        Override | None,
        Channel,
        dict[str, str],
        Reason,
        str | None,
    ]
] = []
for phase in (Phase.ROLLED_BACK, Phase.ROLLING_BACK, Phase.FAILED):
    for who, user, context, override in [
        ("canary-bucket user", CANARY_USER, None, None),
        ("stable-bucket user", STABLE_USER, None, None),
        ("always-canary tester", TESTER, None, None),
        ("canary override", CANARY_USER, None, ovr(C)),
        ("canary context", CANARY_USER, ctx(C), None),
        ("canary context and override", CANARY_USER, ctx(C), ovr(C, release_id="r1")),
        ("no user key", None, None, None),
    ]:
        PRECEDENCE.append(
            (
                f"{phase}: {who}",
                {"phase": phase, "exposure": 5000},
                user,
                context,
                override,
                S,
                CURRENT,
                Reason.ROLLED_BACK,
                "r1",
            )
        )
for who, user, context, override in [
    ("canary-bucket user", CANARY_USER, None, None),
    ("stable-bucket user", STABLE_USER, None, None),
    ("never-canary user", VIP, None, None),
    ("stable override", STABLE_USER, None, ovr(S)),
    ("stable context", STABLE_USER, ctx(S), None),
    ("no user key", None, None, None),
]:
    PRECEDENCE.append(
        (
            f"promoted: {who}",
            {"phase": Phase.PROMOTED},
            user,
            context,
            override,
            S,
            CANDIDATE,
            Reason.PROMOTED,
            "r1",
        )
    )
PRECEDENCE += [
    # pending: exposure 0, so only testers and overrides see the candidate
    ("pending: canary-bucket user", {}, CANARY_USER, None, None, S, CURRENT, Reason.COHORT, "r1"),
    ("pending: tester", {}, TESTER, None, None, C, CANDIDATE, Reason.TARGETED, "r1"),
    (
        "pending: override",
        {},
        STABLE_USER,
        None,
        ovr(C, release_id="r1"),
        C,
        CANDIDATE,
        Reason.OVERRIDE,
        "r1",
    ),
    (
        "pending: user-bound override",
        {},
        "alice",
        None,
        ovr(C, user="alice"),
        C,
        CANDIDATE,
        Reason.OVERRIDE,
        "r1",
    ),
    # promoting: everyone canary, except the never-canary list (targeting precedes cohort)
    (
        "promoting: stable-bucket user",
        {"phase": Phase.PROMOTING},
        STABLE_USER,
        None,
        None,
        C,
        CANDIDATE,
        Reason.COHORT,
        "r1",
    ),
    (
        "promoting: canary-bucket user",
        {"phase": Phase.PROMOTING},
        CANARY_USER,
        None,
        None,
        C,
        CANDIDATE,
        Reason.COHORT,
        "r1",
    ),
    (
        "promoting: never-canary",
        {"phase": Phase.PROMOTING},
        VIP,
        None,
        None,
        S,
        CURRENT,
        Reason.TARGETED,
        "r1",
    ),
    # running and paused: the cohort at the release's exposure
    (
        "running: canary-bucket user",
        {"phase": Phase.RUNNING, "exposure": 1000},
        CANARY_USER,
        None,
        None,
        C,
        CANDIDATE,
        Reason.COHORT,
        "r1",
    ),
    (
        "running: stable-bucket user",
        {"phase": Phase.RUNNING, "exposure": 1000},
        STABLE_USER,
        None,
        None,
        S,
        CURRENT,
        Reason.COHORT,
        "r1",
    ),
    (
        "running: mid user at 10%",
        {"phase": Phase.RUNNING, "exposure": 1000},
        MID_USER,
        None,
        None,
        S,
        CURRENT,
        Reason.COHORT,
        "r1",
    ),
    (
        "running: mid user at 50%",
        {"phase": Phase.RUNNING, "exposure": 5000},
        MID_USER,
        None,
        None,
        C,
        CANDIDATE,
        Reason.COHORT,
        "r1",
    ),
    (
        "paused: mid user at 50%",
        {"phase": Phase.PAUSED, "exposure": 5000},
        MID_USER,
        None,
        None,
        C,
        CANDIDATE,
        Reason.COHORT,
        "r1",
    ),
    (
        "paused: stable-bucket user",
        {"phase": Phase.PAUSED, "exposure": 5000},
        STABLE_USER,
        None,
        None,
        S,
        CURRENT,
        Reason.COHORT,
        "r1",
    ),
    (
        "running: exposure 0",
        {"phase": Phase.RUNNING, "exposure": 0},
        CANARY_USER,
        None,
        None,
        S,
        CURRENT,
        Reason.COHORT,
        "r1",
    ),
    (
        "running: exposure 10000",
        {"phase": Phase.RUNNING, "exposure": 10000},
        STABLE_USER,
        None,
        None,
        C,
        CANDIDATE,
        Reason.COHORT,
        "r1",
    ),
    (
        "running: tester",
        {"phase": Phase.RUNNING, "exposure": 1000},
        TESTER,
        None,
        None,
        C,
        CANDIDATE,
        Reason.TARGETED,
        "r1",
    ),
    (
        "running: never-canary",
        {"phase": Phase.RUNNING, "exposure": 10000},
        VIP,
        None,
        None,
        S,
        CURRENT,
        Reason.TARGETED,
        "r1",
    ),
    # overrides beat contexts and targeting, and apply only when app, release and user match
    (
        "override beats targeting",
        {"phase": Phase.RUNNING},
        TESTER,
        None,
        ovr(S),
        S,
        CURRENT,
        Reason.OVERRIDE,
        "r1",
    ),
    (
        "override beats context",
        {"phase": Phase.RUNNING},
        STABLE_USER,
        ctx(S),
        ovr(C),
        C,
        CANDIDATE,
        Reason.OVERRIDE,
        "r1",
    ),
    (
        "override without user key",
        {"phase": Phase.RUNNING},
        None,
        None,
        ovr(C, release_id="r1"),
        C,
        CANDIDATE,
        Reason.OVERRIDE,
        "r1",
    ),
    (
        "override for another app",
        {"phase": Phase.RUNNING},
        STABLE_USER,
        None,
        ovr(C, app="other"),
        S,
        CURRENT,
        Reason.COHORT,
        "r1",
    ),
    (
        "override for another release",
        {"phase": Phase.RUNNING},
        STABLE_USER,
        None,
        ovr(C, release_id="r0"),
        S,
        CURRENT,
        Reason.COHORT,
        "r1",
    ),
    (
        "override for another user",
        {"phase": Phase.RUNNING},
        STABLE_USER,
        None,
        ovr(C, user="alice"),
        S,
        CURRENT,
        Reason.COHORT,
        "r1",
    ),
    # contexts (user mode): pinned chains
    (
        "current release, canary context",
        {"phase": Phase.RUNNING},
        STABLE_USER,
        ctx(C),
        None,
        C,
        CANDIDATE,
        Reason.PINNED,
        "r1",
    ),
    (
        "current release, stable context",
        {"phase": Phase.RUNNING},
        CANARY_USER,
        ctx(S),
        None,
        S,
        CURRENT,
        Reason.PINNED,
        "r1",
    ),
    (
        "context beats targeting",
        {"phase": Phase.RUNNING},
        TESTER,
        ctx(S),
        None,
        S,
        CURRENT,
        Reason.PINNED,
        "r1",
    ),
    (
        "context without user key",
        {"phase": Phase.RUNNING},
        None,
        ctx(C),
        None,
        C,
        CANDIDATE,
        Reason.PINNED,
        "r1",
    ),
    (
        "context, own versions ignored for current release",
        {"phase": Phase.RUNNING},
        None,
        ctx(C, versions=UNKNOWN_VERSIONS),
        None,
        C,
        CANDIDATE,
        Reason.PINNED,
        "r1",
    ),
    (
        "rolled-back release, canary context",
        {"phase": Phase.RUNNING},
        CANARY_USER,
        ctx(C, "r0", versions={"cart": "v9"}),
        None,
        S,
        OLD_BASELINE,
        Reason.ROLLED_BACK,
        "r0",
    ),
    (
        "rolled-back release, stable context",
        {"phase": Phase.RUNNING},
        CANARY_USER,
        ctx(S, "r0", versions=OLD_BASELINE),
        None,
        S,
        OLD_BASELINE,
        Reason.PINNED,
        "r0",
    ),
    (
        "unknown release, canary context",
        {"phase": Phase.RUNNING},
        STABLE_USER,
        ctx(C, "r9", versions=UNKNOWN_VERSIONS),
        None,
        C,
        UNKNOWN_VERSIONS,
        Reason.PINNED,
        "r9",
    ),
    (
        "unknown release, stable context",
        {"phase": Phase.RUNNING},
        CANARY_USER,
        ctx(S, "r9", versions=UNKNOWN_VERSIONS),
        None,
        S,
        UNKNOWN_VERSIONS,
        Reason.PINNED,
        "r9",
    ),
    (
        "context for another app",
        {"phase": Phase.RUNNING},
        STABLE_USER,
        ctx(C, app="other"),
        None,
        S,
        CURRENT,
        Reason.COHORT,
        "r1",
    ),
    (
        "context for another app, no user key",
        {"phase": Phase.RUNNING},
        None,
        ctx(C, app="other"),
        None,
        S,
        CURRENT,
        Reason.ERROR,
        "r1",
    ),
    ("pending: canary context", {}, STABLE_USER, ctx(C), None, C, CANDIDATE, Reason.PINNED, "r1"),
]


@pytest.mark.parametrize(
    ("state_kwargs", "user", "context", "override", "channel", "versions", "reason", "release_id"),
    [pytest.param(*row[1:], id=row[0]) for row in PRECEDENCE],
)
def test_precedence(
    state_kwargs: dict[str, Any],
    user: Any,
    context: RoutingContext | None,
    override: Override | None,
    channel: Channel,
    versions: dict[str, str],
    reason: Reason,
    release_id: str | None,
) -> None:
    state = make_state(**state_kwargs)
    d = decide(state, user, context, override)
    assert (d.channel, dict(d.versions), d.reason, d.release_id, d.app) == (
        channel,
        versions,
        reason,
        release_id,
        APP,
    )
    assert (d.detail is not None) == (reason is Reason.ERROR)


def test_sample_users_are_where_the_table_assumes() -> None:
    assert bucket(SALT, CANARY_USER) < 100
    assert bucket(SALT, STABLE_USER) >= 9900
    assert 1000 <= bucket(SALT, MID_USER) < 5000


@pytest.mark.parametrize("user", [CANARY_USER, STABLE_USER, TESTER, None, "", 42])
@pytest.mark.parametrize("context", [None, ctx(C), ctx(C, "r9")])
def test_no_release(user: Any, context: RoutingContext | None) -> None:
    state = RoutingState(APP, CURRENT)
    d = decide(state, user, context, ovr(C))
    if context is None:
        assert d == Decision(APP, None, Channel.STABLE, CURRENT, Reason.NO_RELEASE)
    else:
        # This process has not seen the app's first release yet: the signed
        # context is honoured (DESIGN rule 2), the override has nothing to act on.
        assert d == Decision(
            APP, context.release_id, context.channel, context.versions, Reason.PINNED
        )
    assert state.exposure == 0
    assert dict(state.stable_versions) == CURRENT


@pytest.mark.parametrize(
    ("kwargs", "exposure", "stable"),
    [
        ({}, 0, CURRENT),
        ({"phase": Phase.RUNNING, "exposure": 1234}, 1234, CURRENT),
        ({"phase": Phase.PAUSED, "exposure": 1234}, 1234, CURRENT),
        ({"phase": Phase.PROMOTING, "exposure": 1234}, 10000, CURRENT),
        ({"phase": Phase.PROMOTED, "exposure": 1234}, 0, CANDIDATE),
        ({"phase": Phase.ROLLING_BACK, "exposure": 1234}, 0, CURRENT),
        ({"phase": Phase.ROLLED_BACK, "exposure": 1234}, 0, CURRENT),
        ({"phase": Phase.FAILED, "exposure": 1234}, 0, CURRENT),
    ],
)
def test_state_exposure_and_stable_versions(
    kwargs: dict[str, Any], exposure: int, stable: dict[str, str]
) -> None:
    state = make_state(**kwargs)
    assert state.exposure == exposure
    assert dict(state.stable_versions) == stable


def test_state_validation() -> None:
    with pytest.raises(InvalidInput, match="belongs to app 'shop', not 'other'"):
        RoutingState("other", CURRENT, make_release())
    with pytest.raises(InvalidInput, match="invalid app name"):
        RoutingState("Shop", CURRENT)
    with pytest.raises(InvalidInput, match="invalid version name"):
        RoutingState(APP, {"cart": ""})
    with pytest.raises(InvalidInput, match="invalid function name"):
        RoutingState(APP, CURRENT, rolled_back={"r0": {"Cart": "v1"}})


# --- pinned chains across exposure changes ------------------------------------------------------


def test_pinned_canary_survives_exposure_drop() -> None:
    before, after = running(5000), running(100)
    first = decide(before, MID_USER)
    assert first.channel is Channel.CANARY
    token = encode_context(first, KEYRING, now=NOW, user=MID_USER)
    assert decide(after, MID_USER).channel is Channel.STABLE  # fresh decision moved
    for user in (MID_USER, None):  # the user's own hops; a hop that does not know the user
        d = evaluate(after, user, keyring=KEYRING, now=NOW + 10, context=token)
        assert (d.channel, dict(d.versions), d.reason, d.detail) == (
            Channel.CANARY,
            CANDIDATE,
            Reason.PINNED,
            None,
        )
    # someone else is decided afresh: the context is MID_USER's
    d = evaluate(after, "someone-else", keyring=KEYRING, now=NOW + 10, context=token)
    assert d.reason is Reason.COHORT
    assert "(other_user)" in (d.detail or "")


def test_pinned_stable_survives_exposure_rise() -> None:
    before, after = running(1000), running(5000)
    first = decide(before, MID_USER)
    assert first.channel is Channel.STABLE
    token = encode_context(first, KEYRING, now=NOW, user=MID_USER)
    assert decide(after, MID_USER).channel is Channel.CANARY
    d = evaluate(after, MID_USER, keyring=KEYRING, now=NOW + 10, context=token)
    assert (d.channel, dict(d.versions), d.reason) == (Channel.STABLE, CURRENT, Reason.PINNED)


def test_context_of_a_release_that_was_then_rolled_back() -> None:
    first = decide(running(5000), CANARY_USER)
    token = encode_context(first, KEYRING, now=NOW, user=CANARY_USER)
    # later this process learns r1 was rolled back and r2 started
    r2 = Release.start(
        id="r2",
        app=APP,
        current=CURRENT,
        changes={"notify": "v3"},
        salt="salt-2",
        strategy=parse_strategy("AllAtOnce"),
    )
    later = RoutingState(
        APP, CURRENT, dataclasses.replace(r2, phase=Phase.RUNNING), rolled_back={"r1": CURRENT}
    )
    d = evaluate(later, CANARY_USER, keyring=KEYRING, now=NOW + 10, context=token)
    assert (d.release_id, d.channel, dict(d.versions), d.reason) == (
        "r1",
        Channel.STABLE,
        CURRENT,
        Reason.ROLLED_BACK,
    )


# --- request mode -------------------------------------------------------------------------------


def seq(*values: float) -> Callable[[], float]:
    it = itertools.cycle(values)
    return lambda: next(it)


def test_request_mode_rolls_per_call() -> None:
    state = running(3000, route_mode=RouteMode.REQUEST)
    rng = seq(0.0, 0.2999, 0.3, 0.9999)
    got = [decide(state, CANARY_USER, rng=rng).channel for _ in range(8)]
    assert got == [Channel.CANARY, Channel.CANARY, Channel.STABLE, Channel.STABLE] * 2
    assert decide(state, CANARY_USER, rng=lambda: 0.5).reason is Reason.COHORT


def test_request_mode_ignores_contexts() -> None:
    state = running(3000, route_mode=RouteMode.REQUEST)
    d = decide(state, STABLE_USER, ctx(Channel.CANARY), rng=lambda: 0.9)
    assert (d.channel, d.reason) == (Channel.STABLE, Reason.COHORT)
    d = decide(state, STABLE_USER, ctx(Channel.STABLE), rng=lambda: 0.1)
    assert (d.channel, d.reason) == (Channel.CANARY, Reason.COHORT)
    token = encode_context(decide(state, "u", rng=lambda: 0.0), KEYRING, now=NOW)
    d = evaluate(state, "u", keyring=KEYRING, now=NOW, context=token, rng=lambda: 0.99)
    assert d.channel is Channel.STABLE


def test_request_mode_without_user_key_still_rolls() -> None:
    state = running(3000, route_mode=RouteMode.REQUEST)
    assert decide(state, None, rng=lambda: 0.1).channel is Channel.CANARY
    assert decide(state, "", rng=lambda: 0.5).reason is Reason.COHORT


def test_request_mode_keeps_targeting_overrides_and_rollback() -> None:
    state = running(3000, route_mode=RouteMode.REQUEST)
    assert decide(state, TESTER, rng=lambda: 0.99).reason is Reason.TARGETED
    assert decide(state, VIP, rng=lambda: 0.0).channel is Channel.STABLE
    assert decide(state, "u", None, ovr(C), rng=lambda: 0.99).reason is Reason.OVERRIDE
    rolled = make_state(phase=Phase.ROLLED_BACK, route_mode=RouteMode.REQUEST)
    assert decide(rolled, "u", rng=lambda: 0.0).reason is Reason.ROLLED_BACK


def test_request_mode_share_matches_exposure() -> None:
    state = running(2500, route_mode=RouteMode.REQUEST)
    rng = random.Random(1234).random
    n = 100_000
    canary = sum(decide(state, "same-user", rng=rng).is_canary for _ in range(n))
    assert abs(canary - n * 0.25) <= 5 * math.sqrt(n * 0.25 * 0.75)


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("user", [None, ""])
def test_missing_user_key_is_an_error_with_stable_versions(user: str | None) -> None:
    d = decide(running(5000), user)
    assert (d.channel, dict(d.versions), d.reason, d.release_id) == (
        Channel.STABLE,
        CURRENT,
        Reason.ERROR,
        "r1",
    )
    assert d.detail == "no user key: routed to stable"


@pytest.mark.parametrize("user", [42, 4.2, b"user-1", ["user-1"], {"id": 1}, object(), True])
@pytest.mark.parametrize("exposure", [0, 5000, 10000])
def test_non_string_user_key_is_an_error_never_an_exception(user: object, exposure: int) -> None:
    for state in (running(exposure), running(exposure, targeting=Targeting())):
        d = decide(state, user)  # type: ignore[arg-type]
        assert (d.channel, dict(d.versions), d.reason) == (Channel.STABLE, CURRENT, Reason.ERROR)
        assert d.detail


def test_error_after_promotion_gives_the_new_stable() -> None:
    state = make_state(phase=Phase.PROMOTED)
    assert decide(state, None).reason is Reason.PROMOTED
    d = evaluate(state, None, keyring=KEYRING, now=NOW, context="garbage")
    assert dict(d.versions) == CANDIDATE


# --- evaluate -------------------------------------------------------------------------------------


def test_evaluate_valid_context_and_override() -> None:
    state = running(0)
    token = encode_context(decide(running(10000), STABLE_USER), KEYRING, now=NOW, user=STABLE_USER)
    d = evaluate(state, STABLE_USER, keyring=KEYRING, now=NOW, context=token)
    assert (d.channel, d.reason, d.detail) == (Channel.CANARY, Reason.PINNED, None)
    o = issue_override(KEYRING, app=APP, channel=Channel.CANARY, now=NOW, ttl=60, user_key="alice")
    d = evaluate(state, "alice", keyring=KEYRING, now=NOW, override=o)
    assert (d.channel, d.reason, d.detail) == (Channel.CANARY, Reason.OVERRIDE, None)
    d = evaluate(state, "bob", keyring=KEYRING, now=NOW, override=o)
    assert (d.channel, d.reason, d.detail) == (Channel.STABLE, Reason.COHORT, None)


def _tamper(token: str) -> str:
    i = len(token) - 5
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]


def test_evaluate_rejected_context_decides_afresh_and_says_why() -> None:
    state = running(0)
    token = encode_context(
        decide(running(10000), STABLE_USER), KEYRING, now=NOW, ttl=60, user=STABLE_USER
    )
    assert token is not None
    cases = [
        (
            encode_context(decide(running(10000), "x"), KEYRING, now=NOW, user="x"),
            NOW,
            "other_user",
        ),
        (encode_context(decide(running(10000), "x"), KEYRING, now=NOW), NOW, "unbound"),
        (_tamper(token), NOW, "bad_signature"),
        (token, NOW + 60, "expired"),
        ("2.k1.x.y", NOW, "unsupported_version"),
        ("nonsense", NOW, "malformed"),
        (
            encode_context(
                decide(running(10000), "x"),
                Keyring.single(b"x" * 16, "other"),
                now=NOW,
                user=STABLE_USER,
            ),
            NOW,
            "unknown_key",
        ),
    ]
    for context, now, kind in cases:
        d = evaluate(state, STABLE_USER, keyring=KEYRING, now=now, context=context)
        assert (d.channel, d.reason) == (Channel.STABLE, Reason.COHORT), kind
        assert d.detail is not None
        assert d.detail.startswith(f"routing context ignored ({kind}): "), d.detail


def test_evaluate_rejected_override() -> None:
    state = running(0)
    o = issue_override(KEYRING, app=APP, channel=Channel.CANARY, now=NOW, ttl=60)
    d = evaluate(state, STABLE_USER, keyring=KEYRING, now=NOW, override=_tamper(o))
    assert (d.channel, d.reason) == (Channel.STABLE, Reason.COHORT)
    assert d.detail is not None
    assert d.detail.startswith("override ignored (bad_signature): ")
    token = encode_context(decide(running(10000), STABLE_USER), KEYRING, now=NOW)
    d = evaluate(state, STABLE_USER, keyring=KEYRING, now=NOW, override=token)
    assert d.reason is Reason.COHORT
    assert "override ignored (bad_signature)" in (d.detail or "")


def test_evaluate_without_keyring_ignores_tokens() -> None:
    state = running(0)
    token = encode_context(decide(running(10000), STABLE_USER), KEYRING, now=NOW)
    o = issue_override(KEYRING, app=APP, channel=Channel.CANARY, now=NOW, ttl=60)
    d = evaluate(state, STABLE_USER, keyring=None, now=NOW, context=token, override=o)
    assert (d.channel, d.reason) == (Channel.STABLE, Reason.COHORT)
    assert d.detail == (
        "routing context ignored: no signing key configured; "
        "override ignored: no signing key configured"
    )


def test_evaluate_keeps_the_error_detail() -> None:
    d = evaluate(running(0), None, keyring=KEYRING, now=NOW, context="x")
    assert d.reason is Reason.ERROR
    assert d.detail is not None
    assert d.detail.startswith("no user key: routed to stable; routing context ignored (malformed)")


def test_evaluate_never_raises_on_junk() -> None:
    state = running(5000)
    for junk in (b"bytes", 42, ["list"], "\ud800", "1.k1.\ud800.x"):
        d = evaluate(state, "u", keyring=KEYRING, now=NOW, context=junk, override=junk)  # type: ignore[arg-type]
        assert d.reason is Reason.COHORT
        assert d.detail is not None
        assert "routing context ignored" in d.detail
        assert "override ignored" in d.detail


def test_decision_to_dict_from_routing() -> None:
    d = decide(running(10000), STABLE_USER)
    assert d.to_dict() == {
        "app": APP,
        "release_id": "r1",
        "channel": "canary",
        "versions": CANDIDATE,
        "reason": "cohort",
    }
    e = decide(running(10000), None)
    assert e.to_dict()["detail"] == "no user key: routed to stable"
    assert e.to_dict()["versions"] == CURRENT


# --- the fast path and the slow path agree ---------------------------------------------------------


def _keys() -> list[str]:
    rng = random.Random(99)
    keys = [f"user-{i}" for i in range(3000)]
    keys += [
        "".join(chr(rng.randrange(0xA0, 0x3000)) for _ in range(rng.randrange(1, 6)))
        for _ in range(1000)
    ]
    keys += [TESTER, VIP, " ", "\t", "0", "é", "e\u0301", "\ud800", "😀", "x" * 5000]
    return keys


@pytest.mark.parametrize(
    "kwargs",
    [
        {"phase": Phase.RUNNING, "exposure": 2500},
        {"phase": Phase.RUNNING, "exposure": 2500, "targeting": Targeting()},
        {"phase": Phase.PAUSED, "exposure": 7},
        {"phase": Phase.PENDING},
        {"phase": Phase.PROMOTING},
        {"phase": Phase.PROMOTED},
        {"phase": Phase.ROLLED_BACK, "exposure": 2500},
        {"phase": Phase.RUNNING, "exposure": 2500, "route_mode": RouteMode.REQUEST},
    ],
)
def test_fast_and_slow_paths_agree(kwargs: dict[str, Any]) -> None:
    state = make_state(**kwargs)
    inert = ovr(C, app="other-app")  # never applies, but takes the slow path
    exposure = state.exposure
    for key in _keys():
        fast = decide(state, key, rng=lambda: 0.5)
        slow = decide(state, key, None, inert, rng=lambda: 0.5)
        assert fast == slow, key
        if fast.reason is Reason.COHORT and kwargs.get("route_mode") is not RouteMode.REQUEST:
            assert fast.is_canary == (bucket(SALT, key) < exposure)


# --- properties -------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    salt=st.from_regex(SALT_PATTERN, fullmatch=True),
    key=st.text(min_size=1, max_size=30),
    e1=st.integers(0, 10000),
    e2=st.integers(0, 10000),
)
def test_exposure_is_monotonic(salt: str, key: str, e1: int, e2: int) -> None:
    e1, e2 = min(e1, e2), max(e1, e2)
    rel = Release.start(
        id="r1",
        app=APP,
        current=CURRENT,
        changes={"cart": "v2"},
        salt=salt,
        strategy=parse_strategy("AllAtOnce"),
    )
    low = decide(
        RoutingState(APP, CURRENT, dataclasses.replace(rel, phase=Phase.RUNNING, exposure=e1)), key
    )
    high = decide(
        RoutingState(APP, CURRENT, dataclasses.replace(rel, phase=Phase.RUNNING, exposure=e2)), key
    )
    assert low.reason is high.reason is Reason.COHORT
    if low.is_canary:
        assert high.is_canary
    assert low.is_canary == (bucket(salt, key) < e1)
    assert high.is_canary == (bucket(salt, key) < e2)


@pytest.mark.parametrize("exposure", [1, 100, 1000, 2500, 5000, 9900])
def test_canary_share_is_the_exposure(exposure: int) -> None:
    state = running(exposure, targeting=Targeting())
    n = 100_000
    canary = sum(decide(state, f"customer-{i}").is_canary for i in range(n))
    p = exposure / 10000
    assert abs(canary - n * p) <= 5 * math.sqrt(n * p * (1 - p)) + 1


def test_cohorts_of_two_releases_are_independent() -> None:
    def cohort(release_id: str, salt: str) -> set[int]:
        state = RoutingState(
            APP,
            CURRENT,
            dataclasses.replace(
                make_release(id=release_id, salt=salt), phase=Phase.RUNNING, exposure=1000
            ),
        )
        return {i for i in range(100_000) if decide(state, f"customer-{i}").is_canary}

    a, b = cohort("ra", "3f9c2a7d1b6e4058"), cohort("rb", "c81e0d5a9f2b7346")
    n = 100_000
    for c in (a, b):
        assert abs(len(c) - n * 0.1) <= 5 * math.sqrt(n * 0.1 * 0.9)
    assert abs(len(a & b) - n * 0.01) <= 5 * math.sqrt(n * 0.01 * 0.99)


def test_pending_release_exposes_nobody_whatever_exposure_is_stored() -> None:
    state = make_state(phase=Phase.PENDING, exposure=10_000)
    assert state.exposure == 0
    assert decide(state, CANARY_USER).channel is Channel.STABLE


# --- rollback always wins; a context's expiry is a hard bound ------------------------------------


def test_a_rolled_back_release_context_is_refused_once_out_of_the_history() -> None:
    """The snapshot names the last ten rolled-back releases; an older release's context (one
    pushed out of that list) is stale, never honoured again: rollback always wins."""
    first = decide(running(5000), CANARY_USER)
    assert first.channel is Channel.CANARY
    token = encode_context(first, KEYRING, now=NOW, user=CANARY_USER)
    r12 = Release.start(
        id="r12",
        app=APP,
        current=CURRENT,
        changes={"notify": "v3"},
        salt="salt-12",
        strategy=parse_strategy("AllAtOnce"),
    )
    # r1 was rolled back, then r2..r11 were rolled back too and pushed it out of the list
    later = RoutingState(
        APP,
        CURRENT,
        dataclasses.replace(r12, phase=Phase.RUNNING, exposure=0),
        rolled_back={f"r{i}": CURRENT for i in range(2, 12)},
    )
    seen: list[tuple[str, str]] = []
    d = evaluate(
        later,
        CANARY_USER,
        keyring=KEYRING,
        now=NOW + 10,
        context=token,
        on_rejected=lambda what, why: seen.append((what, str(why.kind))),
    )
    assert (d.release_id, d.channel, dict(d.versions), d.reason) == (
        "r12",
        Channel.STABLE,
        CURRENT,
        Reason.COHORT,
    )
    assert "routing context ignored (stale)" in (d.detail or "")
    assert seen == [("routing context", "stale")]
    # a hop that does not know its user refuses it too (decided afresh: no user, stable)
    d = evaluate(later, None, keyring=KEYRING, now=NOW + 10, context=token)
    assert (d.channel, d.reason) != (Channel.CANARY, Reason.PINNED)
    assert dict(d.versions) == CURRENT
    # decide() itself never pins to a stale release
    stale = ctx(C, "r1")
    assert decide(later, CANARY_USER, stale).reason is Reason.COHORT
    # a newer release this process has not seen yet is still honoured (DESIGN rule 2)
    newer = ctx(C, "r13", versions=UNKNOWN_VERSIONS)
    d = decide(later, CANARY_USER, newer)
    assert (d.release_id, dict(d.versions), d.reason) == ("r13", UNKNOWN_VERSIONS, Reason.PINNED)


@given(seq_ctx=st.integers(0, 40), seq_cur=st.integers(1, 40))
def test_only_the_current_a_known_or_a_newer_release_is_pinned(seq_ctx: int, seq_cur: int) -> None:
    cur = dataclasses.replace(make_release(id=f"shop-{seq_cur}"), phase=Phase.RUNNING, exposure=0)
    state = RoutingState(APP, CURRENT, cur)
    d = decide(state, STABLE_USER, ctx(C, f"shop-{seq_ctx}"))
    pinned = d.reason is Reason.PINNED
    assert pinned == (seq_ctx >= seq_cur)


def test_a_pinned_decision_keeps_its_context_expiry_when_signed_again() -> None:
    """Re-signing an honoured context never extends it: a chain stays pinned at most as long
    as its first context said."""
    first = decide(running(5000), CANARY_USER)
    token = encode_context(first, KEYRING, now=NOW, ttl=600, user=CANARY_USER)
    state = running(5000)
    at = NOW
    for _ in range(5):  # every hop (or discovery call) re-signs what it was pinned by
        at += 300
        d = evaluate(state, CANARY_USER, keyring=KEYRING, now=at, context=token)
        if d.reason is not Reason.PINNED:
            break
        signed = encode_context(d, KEYRING, now=at, ttl=3600, user=CANARY_USER)
        assert signed is not None
        got = decode_context(signed, KEYRING, now=at)
        assert isinstance(got, RoutingContext)
        assert got.expires_at == NOW + 600
        token = signed
    else:
        raise AssertionError("a context re-signed every 5 minutes lived past its expiry")
    assert at >= NOW + 600
    assert "(expired)" in (d.detail or "")
    # a fresh decision (not pinned) gets a fresh expiry
    fresh = encode_context(d, KEYRING, now=at, ttl=600, user=CANARY_USER)
    got = decode_context(fresh or "", KEYRING, now=at)
    assert isinstance(got, RoutingContext)
    assert got.expires_at == at + 600
