"""Context laundering at the gateway: a canary context asked of discovery for one user (say a
tester) and replayed under another identity, or with none, lands nobody else in the canary;
each replay is counted by its kind on the gateway's /metrics."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from coalmine.core.context import bind_user, decode_context, find_in_baggage
from coalmine.core.model import Channel
from coalmine.core.routing import decide
from coalmine.gateway import IdentityConfig
from coalmine.web.discovery import DiscoverySettings, discover
from tests.gateway.fixtures.harness import KEYRING, make_jwt
from tests.gateway.test_gateway import Running, downstream_headers, running

JWT_SECRET = "binding-jwt-secret-0123456789-abcdef"


def _discovery_context(gw: Running, user: str) -> str:
    """What discovery (the control plane, with the gateway's keys) answers ``user``."""
    answer = discover(gw.snapshot, user, DiscoverySettings(keyring=KEYRING), now=time.time())
    assert answer["channel"] == "canary"
    context: str = answer["context"]
    return context


def _rejected(gw: Running, text: str) -> dict[tuple[str, str], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "coalmine_gateway_tokens_rejected_total":
                out[s.labels["token"], s.labels["kind"]] = s.value
    return out


async def test_a_testers_context_replayed_by_anyone_else_is_not_honoured() -> None:
    identity = IdentityConfig(user_header="x-user-id", jwt_secret=JWT_SECRET)
    async with running(identity=identity) as gw:
        tester = gw.user_in(Channel.CANARY)
        mallory = gw.user_in(Channel.STABLE)
        laundered = _discovery_context(gw, tester)
        baggage = {"baggage": f"coalmine={laundered}"}

        # the tester's own calls keep the canary
        r = await gw.client.get("/api/echo", headers={"x-user-id": tester, **baggage})
        assert (r.headers["x-coalmine-channel"], r.json()["version"]) == ("canary", "v2")

        # another identity, by header and by a verified JWT: their own cohort (stable)
        jwt = make_jwt({"sub": mallory, "exp": time.time() + 60}, JWT_SECRET)
        for who in ({"x-user-id": mallory}, {"authorization": f"Bearer {jwt}"}):
            r = await gw.client.get("/api/echo", headers={**who, **baggage})
            assert (r.headers["x-coalmine-channel"], r.json()["version"]) == ("stable", "v1")
            sent = downstream_headers(r)
            assert sent["x-coalmine-user"] == mallory
            onward = decode_context(find_in_baggage(sent["baggage"]), KEYRING, now=time.time())
            assert not hasattr(onward, "kind"), onward
            assert onward.binding == bind_user(KEYRING, mallory)  # type: ignore[union-attr]

        # anonymous: the gateway's own minted id, decided as itself
        for _ in range(5):
            gw.client.cookies.clear()
            r = await gw.client.get("/api/echo", headers=baggage)
            anonymous = downstream_headers(r)["x-coalmine-user"]
            expected = decide(gw.snapshot.state, anonymous)
            assert r.headers["x-coalmine-channel"] == str(expected.channel)
            assert r.json()["version"] == expected.versions["api"]

        metrics = (await gw.client.get("/metrics")).text
        assert _rejected(gw, metrics) == {("context", "other_user"): 2 + 5}


async def test_a_context_that_names_no_user_is_refused_and_counted() -> None:
    """What a coalmine from before bindings signed (during a rolling upgrade)."""
    from coalmine.core.context import encode_context

    async with running() as gw:
        canary = gw.user_in(Channel.CANARY)
        stable = gw.user_in(Channel.STABLE)
        unbound = encode_context(decide(gw.snapshot.state, canary), KEYRING, now=time.time())
        r = await gw.client.get(
            "/api/echo", headers={"x-user-id": stable, "baggage": f"coalmine={unbound}"}
        )
        assert r.headers["x-coalmine-channel"] == "stable"
        metrics = (await gw.client.get("/metrics")).text
        assert _rejected(gw, metrics) == {("context", "unbound"): 1}


async def test_the_gateway_never_extends_the_context_it_was_pinned_by() -> None:
    """The context the gateway sends on keeps the incoming context's expiry (a chain cannot
    keep itself pinned by being re-signed hop after hop); a fresh decision gets a fresh one."""
    from coalmine.core.context import encode_context

    identity = IdentityConfig(user_header="x-user-id")
    async with running(identity=identity) as gw:
        canary = gw.user_in(Channel.CANARY)
        now = time.time()
        soon = int(now) + 90  # far below the gateway's own context lifetime
        pinned = encode_context(
            decide(gw.snapshot.state, canary), KEYRING, now=now, ttl=90, user=canary
        )
        for _ in range(2):  # the second request is served by the cached signer
            r = await gw.client.get(
                "/api/echo", headers={"x-user-id": canary, "baggage": f"coalmine={pinned}"}
            )
            assert r.headers["x-coalmine-channel"] == "canary"
            sent = downstream_headers(r)
            onward = decode_context(find_in_baggage(sent["baggage"]), KEYRING, now=now)
            assert onward.expires_at == soon  # type: ignore[union-attr]
        r = await gw.client.get("/api/echo", headers={"x-user-id": canary})
        fresh = decode_context(find_in_baggage(downstream_headers(r)["baggage"]), KEYRING, now=now)
        assert fresh.expires_at > soon  # type: ignore[union-attr]
