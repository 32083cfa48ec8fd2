"""Client: decides exactly as the core does, honours contexts, never raises."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

import coalmine
from coalmine.core import decide, decode_context, encode_context
from coalmine.core.context import RoutingContext
from coalmine.core.errors import InvalidInput
from coalmine.core.model import Channel, Decision, Reason
from coalmine.core.signing import Keyring, Rejected
from coalmine.sdk import Client, current_decision, current_token
from tests.sdk import APP, KEYRING, ControlPlane, MockPlane, make_snapshot

OTHER_KEYS = Keyring.single("another-secret-0123456789abcdef", "x1")


@pytest.fixture
def mock() -> MockPlane:
    return MockPlane(make_snapshot(1))


@pytest.fixture
def client(mock: MockPlane) -> Iterator[Client]:
    with Client(
        "http://plane", "sdk-key", apps=[APP], signing_keys=KEYRING, stream=False, http=mock.http()
    ) as c:
        yield c


def test_decides_like_the_core_for_10000_users_of_a_real_control_plane(sqlite_url: str) -> None:
    with ControlPlane(sqlite_url) as plane:
        plane.seed()
        plane.start_release()
        with Client(plane.url, plane.sdk_key(), apps=[APP], signing_keys=KEYRING) as client:
            snap = client.snapshot(APP)
            assert snap is not None
            assert snap == plane.snapshot()
            users = [f"user-{i}" for i in range(10_000)] + ["ünïcode-user", "x" * 300]
            mine = [client.decide(APP, u) for u in users]
            assert mine == [decide(snap.state, u) for u in users]
            canary = sum(d.channel is Channel.CANARY for d in mine)
            assert 2700 < canary < 3300  # 30 %
            d = next(d for d in mine if d.is_canary)
            assert client.target(APP, "api", d) == "shop.api_v2:handler"
            assert client.target(APP, "worker", d) == "shop.worker:handler"
            assert client.target(APP, "nope", d) is None


def test_an_incoming_context_pins_the_channel_in_every_form(client: Client) -> None:
    snap = client.snapshot(APP)
    assert snap is not None
    user = next(f"u{i}" for i in range(1000) if not decide(snap.state, f"u{i}").is_canary)
    assert client.decide(APP, user).channel is Channel.STABLE

    upstream = Decision(APP, "shop-1", Channel.CANARY, {"api": "v2", "worker": "v1"}, Reason.COHORT)
    token = client.encode(upstream, user=user)
    assert token is not None
    ctx = decode_context(token, KEYRING, now=time.time())
    assert isinstance(ctx, RoutingContext)
    for context in (token, f"userId=alice,coalmine={token};p=1", ctx):
        d = client.decide(APP, user, context)
        assert (d.channel, d.reason, d.release_id) == (Channel.CANARY, Reason.PINNED, "shop-1")
        assert d.detail is None
    # the same context in every form grants nothing to another user
    other = next(f"v{i}" for i in range(1000) if not decide(snap.state, f"v{i}").is_canary)
    for context in (token, f"userId=alice,coalmine={token};p=1", ctx):
        d = client.decide(APP, other, context)
        assert (d.channel, d.reason) == (Channel.STABLE, Reason.COHORT)
        assert "routing context ignored (other_user)" in (d.detail or "")
    # a hop that does not know its user keeps the chain, and passes the binding on
    middle = client.decide(APP, None, token)
    assert (middle.channel, middle.reason) == (Channel.CANARY, Reason.PINNED)
    onward = client.encode(middle)
    assert client.decide(APP, user, onward).reason is Reason.PINNED
    assert client.decide(APP, other, onward).channel is Channel.STABLE

    # a baggage header without our member, or an empty one: decided afresh
    assert client.decide(APP, user, "userId=alice").reason is Reason.COHORT
    assert client.decide(APP, user, "  ").reason is Reason.COHORT


def test_a_forged_or_unverifiable_context_is_ignored_with_a_reason(
    client: Client, mock: MockPlane
) -> None:
    snap = client.snapshot(APP)
    assert snap is not None
    user = next(f"u{i}" for i in range(1000) if not decide(snap.state, f"u{i}").is_canary)
    canary = Decision(APP, "shop-1", Channel.CANARY, {"api": "v2", "worker": "v1"}, Reason.COHORT)
    forged = encode_context(canary, OTHER_KEYS, now=time.time())
    assert forged is not None
    d = client.decide(APP, user, forged)
    assert (d.channel, d.reason) == (Channel.STABLE, Reason.COHORT)
    assert d.detail is not None
    assert "unknown_key" in d.detail

    with Client("http://plane", "sdk-key", apps=[APP], stream=False, http=mock.http()) as keyless:
        assert keyless.keyring is None
        d = keyless.decide(APP, user, encode_context(canary, KEYRING, now=time.time()))
        assert d.channel is Channel.STABLE
        assert d.detail == "routing context ignored: no signing key configured"
        assert keyless.encode(canary) is None


def test_without_any_routing_the_decision_is_stable_with_an_error(mock: MockPlane) -> None:
    with ControlPlane.closed_url() as url, Client(url, "k", signing_keys=KEYRING, wait=0.2) as c:
        started = time.monotonic()
        d = c.decide(APP, "alice")
        assert time.monotonic() - started < 1
        assert d == Decision(
            APP,
            None,
            Channel.STABLE,
            {},
            Reason.ERROR,
            "no routing configuration for app 'shop' yet",
        )
        assert c.encode(d) is None
        # the wait is paid once per app
        started = time.monotonic()
        assert c.decide(APP, "bob").reason is Reason.ERROR
        assert time.monotonic() - started < 0.1

        # a verified context is still honoured (DESIGN rule 2), a forged one is not
        upstream = Decision(APP, "shop-9", Channel.CANARY, {"api": "v7"}, Reason.COHORT)
        token = c.encode(upstream, user="alice")
        pinned = c.decide(APP, "alice", token)
        assert (pinned.channel, pinned.reason, dict(pinned.versions)) == (
            Channel.CANARY,
            Reason.PINNED,
            {"api": "v7"},
        )
        assert (
            c.decide(APP, "alice", encode_context(upstream, OTHER_KEYS, now=time.time())).reason
            is Reason.ERROR
        )
        ctx = decode_context(token, KEYRING, now=time.time())
        assert isinstance(ctx, RoutingContext)
        assert c.decide(APP, "alice", ctx).reason is Reason.PINNED
        assert c.decide("blog", "alice", ctx).reason is Reason.ERROR  # another app's context


def test_decide_never_raises(client: Client) -> None:
    d = client.decide("Not An App", "alice")
    assert (d.channel, d.reason) == (Channel.STABLE, Reason.ERROR)
    assert d.detail is not None
    assert "invalid app name" in d.detail
    assert client.decide(APP, None).reason is Reason.ERROR  # no user key: stable
    assert client.decide(APP, "alice", "coalmine=garbage").detail is not None
    assert client.decide(APP, "alice", 42).reason is Reason.COHORT  # type: ignore[arg-type]


def test_apps_are_followed_lazily_on_first_decide(mock: MockPlane) -> None:
    mock.snapshots["blog"] = make_snapshot(3, app="blog", release_id="blog-1")
    with Client("http://plane", "sdk-key", stream=False, http=mock.http()) as c:
        assert not c.sync.apps
        d = c.decide("blog", "alice")
        assert d.release_id == "blog-1"
        assert d.reason is Reason.COHORT
        assert list(c.sync.apps) == ["blog"]
        assert c.status("blog").revision == 3


def test_encode_signs_a_context_that_decodes_to_the_decision(client: Client) -> None:
    d = client.decide(APP, "alice")
    token = client.encode(d)
    assert token is not None
    ctx = decode_context(token, KEYRING, now=time.time())
    assert isinstance(ctx, RoutingContext)
    assert (ctx.release_id, ctx.channel, dict(ctx.versions)) == (
        d.release_id,
        d.channel,
        dict(d.versions),
    )
    short = client.encode(d, ttl=1)
    assert isinstance(decode_context(short, KEYRING, now=time.time() + 2), Rejected)
    no_release = Decision(APP, None, Channel.STABLE, {"api": "v1"}, Reason.NO_RELEASE)
    assert client.encode(no_release) is None
    huge = Decision(APP, "r", Channel.CANARY, {f"f{i}": "v" * 60 for i in range(60)}, Reason.COHORT)
    assert client.encode(huge) is None  # too large: logged, not raised

    with client.use(d):
        assert current_decision() is d
        assert current_token() is not None
    assert current_decision() is None


def test_signing_keys_from_a_spec_or_the_environment(
    mock: MockPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = "k2:new-secret-0123456789abcdef,k1:old-secret-0123456789abcdef"
    with Client("http://p", "sdk-key", signing_keys=spec, http=mock.http(), wait=0) as c:
        assert c.keyring is not None
        assert c.keyring.active == "k2"
    monkeypatch.setenv("COALMINE_SIGNING_KEYS", spec)
    with Client("http://p", "sdk-key", http=mock.http(), wait=0) as c:
        assert c.keyring == Keyring.parse(spec)
    monkeypatch.setenv("COALMINE_SIGNING_KEYS", "no-colon")
    with pytest.raises(InvalidInput, match="COALMINE_SIGNING_KEYS"):
        Client("http://p", "sdk-key", http=mock.http(), wait=0)


def test_the_client_is_exported_at_the_top_level() -> None:
    assert coalmine.Client is Client
    assert "Client" in coalmine.__all__
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        coalmine.Nope  # noqa: B018
