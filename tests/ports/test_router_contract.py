"""The `Router` contract: one suite, run against every implementation.

`StaticRouter` (the in-memory one, over a given `RoutingState`) and
`coalmine.sdk.Client` (following a control plane, here one answering from an
in-memory snapshot through httpx's ``MockTransport``) must both pass it
unchanged: the same decision as the core for every user, a valid signed
context pins, anything else is ignored, and nothing raises.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from coalmine.core.context import encode_context
from coalmine.core.model import Channel, Reason
from coalmine.core.ports import Router
from coalmine.core.routing import decide
from coalmine.core.signing import Keyring
from coalmine.sdk import Client, StaticRouter
from tests.sdk import APP, KEYRING, MockPlane, make_snapshot

SNAPSHOT = make_snapshot(1)
USERS = [f"user-{i}" for i in range(500)]
OTHER_KEYS = Keyring.single("another-secret-0123456789abcdef", "x1")


@pytest.fixture(params=["static", "client"])
def router(request: pytest.FixtureRequest) -> Iterator[Router]:
    """A router for app `APP` at `SNAPSHOT`'s routing, verifying with `KEYRING`."""
    if request.param == "static":
        yield StaticRouter(SNAPSHOT.state, KEYRING)
        return
    plane = MockPlane(SNAPSHOT)
    with Client(
        "http://plane",
        "sdk-key",
        apps=[APP],
        signing_keys=KEYRING,
        stream=False,
        wait=2.0,
        http=plane.http(),
    ) as client:
        yield client


def user_in(channel: Channel) -> str:
    return next(u for u in USERS if decide(SNAPSHOT.state, u).channel is channel)


def test_it_is_a_router(router: Router) -> None:
    assert isinstance(router, Router)


def test_every_user_is_decided_as_the_core_decides(router: Router) -> None:
    for user in USERS:
        expected = decide(SNAPSHOT.state, user)
        got = router.decide(APP, user)
        assert (got.channel, dict(got.versions), got.release_id, got.reason) == (
            expected.channel,
            dict(expected.versions),
            expected.release_id,
            expected.reason,
        ), user


def test_a_valid_signed_context_pins_the_channel(router: Router) -> None:
    canary = decide(SNAPSHOT.state, user_in(Channel.CANARY))
    stable_user = user_in(Channel.STABLE)
    # the user's chain was decided canary upstream (before, say, the exposure dropped)
    token = encode_context(canary, KEYRING, now=time.time(), user=stable_user)
    pinned = router.decide(APP, stable_user, token)
    assert (pinned.channel, pinned.reason) == (Channel.CANARY, Reason.PINNED)
    assert dict(pinned.versions) == dict(canary.versions)
    # a hop that does not know the user keeps the chain too
    assert router.decide(APP, None, token).reason is Reason.PINNED


def test_another_users_context_grants_nothing(router: Router) -> None:
    canary_user = user_in(Channel.CANARY)
    token = encode_context(
        decide(SNAPSHOT.state, canary_user), KEYRING, now=time.time(), user=canary_user
    )
    for context in (
        token,
        encode_context(decide(SNAPSHOT.state, canary_user), KEYRING, now=time.time()),
    ):
        got = router.decide(APP, user_in(Channel.STABLE), context)
        assert (got.channel, got.reason) == (Channel.STABLE, Reason.COHORT)


@pytest.mark.parametrize("context", ["not-a-token", "", "a.b.c", "x" * 5000])
def test_a_context_that_does_not_verify_is_ignored(router: Router, context: str) -> None:
    user = user_in(Channel.STABLE)
    got = router.decide(APP, user, context)
    assert got.channel is Channel.STABLE
    assert got.reason is not Reason.PINNED


def test_a_context_signed_with_another_key_is_ignored(router: Router) -> None:
    canary = decide(SNAPSHOT.state, user_in(Channel.CANARY))
    forged = encode_context(canary, OTHER_KEYS, now=time.time())
    got = router.decide(APP, user_in(Channel.STABLE), forged)
    assert (got.channel, got.reason) != (Channel.CANARY, Reason.PINNED)
    assert got.channel is Channel.STABLE


def test_an_app_without_routing_is_stable_with_an_error_reason(router: Router) -> None:
    got = router.decide("another-app", "user-1")
    assert (got.app, got.channel, got.reason, got.release_id) == (
        "another-app",
        Channel.STABLE,
        Reason.ERROR,
        None,
    )
    assert got.detail


def test_no_user_key_never_raises(router: Router) -> None:
    got = router.decide(APP, None)
    assert got.channel is Channel.STABLE
