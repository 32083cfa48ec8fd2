"""The gateway end to end over real servers: uvicorn in front, aiohttp and local handlers behind."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import httpx
import pytest

from coalmine.core.context import decode_context, encode_context, find_in_baggage
from coalmine.core.model import Channel, Decision, Reason, TargetKind
from coalmine.core.override import issue_override
from coalmine.core.routing import decide
from coalmine.core.signing import unseal
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.gateway import Gateway, GatewayConfig, IdentityConfig, LocalTarget, StaticSource
from coalmine.gateway.identity import ANONYMOUS_PURPOSE
from coalmine.gateway.server import PROTOCOL
from tests.gateway.fixtures import counter
from tests.gateway.fixtures.harness import (
    APP,
    KEYRING,
    OTHER_KEYRING,
    RELEASE_ID,
    Upstream,
    make_jwt,
    run_upstream,
    serve_asgi,
    shop_snapshot,
)


@dataclass
class Running:
    url: str
    client: httpx.AsyncClient
    snapshot: RoutingSnapshot
    source: StaticSource
    upstream: Upstream
    gateway: Gateway

    def expected(self, user: str) -> Decision:
        return decide(self.snapshot.state, user)

    def user_in(self, channel: Channel, start: int = 0) -> str:
        for i in range(start, start + 10_000):
            if self.expected(f"user-{i}").channel is channel:
                return f"user-{i}"
        raise AssertionError(f"no {channel} user")


@asynccontextmanager
async def running(**settings: Any) -> AsyncIterator[Running]:
    async with run_upstream() as upstream:
        snapshot = shop_snapshot(upstream.url)
        source = StaticSource(snapshot)
        settings.setdefault("identity", IdentityConfig(user_header="x-user-id"))
        config = GatewayConfig(app=APP, keyring=KEYRING, **settings)
        gateway = Gateway(config, source)
        async with (
            serve_asgi(gateway, http=PROTOCOL) as url,
            httpx.AsyncClient(base_url=url, timeout=10) as client,
        ):
            yield Running(url, client, snapshot, source, upstream, gateway)


@pytest.fixture
async def gw() -> AsyncIterator[Running]:
    async with running() as r:
        yield r


def downstream_headers(response: httpx.Response) -> dict[str, str]:
    """What the echo upstream received (last value of each header)."""
    return {k.lower(): v for k, v in response.json()["headers"]}


def assert_routed(response: httpx.Response, expected: Decision, function: str) -> None:
    assert response.headers["x-coalmine-channel"] == str(expected.channel)
    assert response.headers["x-coalmine-version"] == expected.versions[function]
    assert response.headers["x-coalmine-release"] == RELEASE_ID


# -- routing ------------------------------------------------------------------


async def test_2000_users_get_exactly_the_decision_of_core_decide(gw: Running) -> None:
    users = [f"user-{i}" for i in range(2000)]
    sem = asyncio.Semaphore(8)

    # aiohttp as the client too: httpx's own overhead would dominate 2,000 requests
    async def call(session: aiohttp.ClientSession, user: str) -> tuple[str, int, Any, Any]:
        async with sem, session.get(f"{gw.url}/api/echo", headers={"x-user-id": user}) as r:
            return user, r.status, r.headers, await r.json()

    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*(call(session, u) for u in users))
    canary = 0
    for user, status, headers, body in results:
        assert status == 200, body
        expected = gw.expected(user)
        assert headers["x-coalmine-channel"] == str(expected.channel)
        assert headers["x-coalmine-version"] == expected.versions["api"]
        assert headers["x-coalmine-release"] == RELEASE_ID
        # the upstream that answered is the decided version's, and it was told the user
        assert body["version"] == expected.versions["api"]
        assert {k.lower(): v for k, v in body["headers"]}["x-coalmine-user"] == user
        canary += expected.channel is Channel.CANARY
    assert 300 < canary < 500  # 20% of 2000, give or take


async def test_path_rest_and_query_reach_the_upstream_and_its_headers_come_back(
    gw: Running,
) -> None:
    user = gw.user_in(Channel.STABLE)
    r = await gw.client.get(
        "/api/echo/a%2Fb/c?x=1&y=%20", headers={"x-user-id": user, "cookie": "k=v"}
    )
    assert r.status_code == 200
    assert r.json()["path"] == "/v1/echo/a%2Fb/c?x=1&y=%20"
    assert r.headers["x-upstream"] == "v1"
    assert r.headers["set-cookie"] == "a=1"
    # the gateway's decision headers replace whatever the upstream said
    assert r.headers.get_list("x-coalmine-channel") == ["stable"]
    sent = downstream_headers(r)
    assert sent["cookie"] == "k=v"
    assert sent["x-forwarded-for"] == "127.0.0.1"
    assert sent["x-forwarded-proto"] == "http"
    assert sent["host"].startswith("127.0.0.1:")  # the upstream's own host


async def test_unknown_function_is_404_and_healthz_answers_locally(gw: Running) -> None:
    r = await gw.client.get("/nope/x", headers={"x-user-id": "u"})
    assert (r.status_code, r.json()) == (404, {"detail": "app shop has no function named nope"})
    assert "x-coalmine-version" not in r.headers
    r = await gw.client.get("/")
    assert r.status_code == 404
    r = await gw.client.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok", "app": APP, "revision": 1})


async def test_no_snapshot_yet_is_503_until_one_arrives(gw: Running) -> None:
    gw.source.clear(APP)
    r = await gw.client.get("/api/echo", headers={"x-user-id": "u"})
    assert (r.status_code, r.json()) == (
        503,
        {"detail": "no routing configuration for app shop yet"},
    )
    gw.source.set(gw.snapshot)
    r = await gw.client.get("/api/echo", headers={"x-user-id": "u"})
    assert r.status_code == 200


async def test_a_rollback_in_the_source_sends_canary_users_to_the_baseline(gw: Running) -> None:
    from coalmine.core.model import Phase

    user = gw.user_in(Channel.CANARY)
    r = await gw.client.get("/api/echo", headers={"x-user-id": user})
    assert (r.headers["x-coalmine-channel"], r.json()["version"]) == ("canary", "v2")
    gw.source.set(shop_snapshot(gw.upstream.url, phase=Phase.ROLLED_BACK, revision=2))
    r = await gw.client.get("/api/echo", headers={"x-user-id": user})
    assert (r.headers["x-coalmine-channel"], r.json()["version"]) == ("stable", "v1")


# -- identity -------------------------------------------------------------------


async def test_cookie_and_jwt_identities_and_a_bad_jwt_signature_is_not_trusted() -> None:
    identity = IdentityConfig(
        user_header=None,
        user_cookie="session-user",
        jwt_secret="jwt-s3cret-of-at-least-32-bytes-long",
    )
    async with running(identity=identity) as gw:
        canary = gw.user_in(Channel.CANARY)
        # the header strategy is off: x-user-id is ignored
        r = await gw.client.get("/api/echo", headers={"x-user-id": canary})
        assert downstream_headers(r)["x-coalmine-user"] != canary
        assert "coalmine-uid=" in r.headers["set-cookie"]
        gw.client.cookies.clear()

        r = await gw.client.get("/api/echo", headers={"cookie": f"session-user={canary}"})
        assert_routed(r, gw.expected(canary), "api")
        assert downstream_headers(r)["x-coalmine-user"] == canary
        gw.client.cookies.clear()

        token = make_jwt(
            {"sub": canary, "exp": time.time() + 60}, "jwt-s3cret-of-at-least-32-bytes-long"
        )
        r = await gw.client.get("/api/echo", headers={"authorization": f"Bearer {token}"})
        assert_routed(r, gw.expected(canary), "api")
        assert downstream_headers(r)["x-coalmine-user"] == canary
        # the token itself is passed on to the function
        assert downstream_headers(r)["authorization"] == f"Bearer {token}"

        forged = make_jwt({"sub": canary}, "not-the-secret")
        r = await gw.client.get("/api/echo", headers={"authorization": f"Bearer {forged}"})
        assert r.status_code == 200
        assert downstream_headers(r)["x-coalmine-user"] != canary
        assert "coalmine-uid=" in r.headers["set-cookie"]  # treated as anonymous


async def test_the_anonymous_cookie_is_sticky(gw: Running) -> None:
    r1 = await gw.client.get("/api/echo")
    (cookie,) = [c for c in r1.headers.get_list("set-cookie") if c.startswith("coalmine-uid=")]
    attributes = {a.strip() for a in cookie.split(";")[1:]}
    assert {"HttpOnly", "SameSite=Lax", "Max-Age=31536000", "Path=/"} <= attributes
    uid = downstream_headers(r1)["x-coalmine-user"]
    value = cookie.split(";")[0].removeprefix("coalmine-uid=")
    opened = unseal(ANONYMOUS_PURPOSE, KEYRING, value, now=time.time(), max_bytes=512)
    assert isinstance(opened, dict)
    assert opened["u"] == uid  # the cookie is the id, signed
    # a client that sets its own anonymous id (say, one it found in the canary) is not believed
    chosen = gw.user_in(Channel.CANARY)
    forged = await gw.client.get("/api/echo", headers={"cookie": f"coalmine-uid={chosen}-padded"})
    assert downstream_headers(forged)["x-coalmine-user"] not in (chosen, f"{chosen}-padded")
    assert any(c.startswith("coalmine-uid=") for c in forged.headers.get_list("set-cookie"))
    gw.client.cookies.clear()
    gw.client.cookies.set("coalmine-uid", value)
    assert_routed(r1, gw.expected(uid), "api")
    for _ in range(3):  # httpx keeps the cookie, as a browser does
        r = await gw.client.get("/api/echo")
        assert r.headers.get_list("set-cookie") == ["a=1"]  # the upstream's only
        assert downstream_headers(r)["x-coalmine-user"] == uid
        assert r.headers["x-coalmine-channel"] == r1.headers["x-coalmine-channel"]
    # a client without the cookie is someone else
    gw.client.cookies.clear()
    r = await gw.client.get("/api/echo")
    assert downstream_headers(r)["x-coalmine-user"] != uid


# -- routing context in and out ----------------------------------------------------


def canary_context(keyring: Any, user: str | None = None) -> str:
    snap_candidate = {"api": "v2", "greet": "v2", "orders": "v2"}
    decision = Decision(APP, RELEASE_ID, Channel.CANARY, snap_candidate, Reason.COHORT)
    token = encode_context(decision, keyring, now=time.time(), user=user)
    assert token is not None
    return token


async def test_a_forged_or_unsigned_context_is_dropped_and_a_signed_one_honoured(
    gw: Running,
) -> None:
    user = gw.user_in(Channel.STABLE)
    for bad in (
        canary_context(OTHER_KEYRING, user),
        "1.gw1.e30.AAAAAAAAAAAAAAAAAAAAAA",
        "garbage",
        canary_context(KEYRING, "someone-else"),  # signed, but decided for another user
        canary_context(KEYRING),  # signed, but names no user (an older coalmine's)
    ):
        r = await gw.client.get(
            "/api/echo", headers={"x-user-id": user, "baggage": f"coalmine={bad},team=blue"}
        )
        assert_routed(r, gw.expected(user), "api")  # the user's own cohort: stable
        sent = find_in_baggage(downstream_headers(r)["baggage"])
        assert sent is not None
        assert sent != bad

    signed = canary_context(KEYRING, user)
    r = await gw.client.get(
        "/api/echo", headers={"x-user-id": user, "baggage": f"coalmine={signed}"}
    )
    assert (r.headers["x-coalmine-channel"], r.headers["x-coalmine-version"]) == ("canary", "v2")
    assert r.json()["version"] == "v2"


async def test_the_downstream_gets_the_gateways_signed_context_and_other_members(
    gw: Running,
) -> None:
    for channel in Channel:
        user = gw.user_in(channel)
        r = await gw.client.get(
            "/api/echo",
            headers={
                "x-user-id": user,
                "baggage": "team=blue, coalmine=forged",
                "x-coalmine-user": "someone-else",
                "x-coalmine-override": "not-a-token",
            },
        )
        sent = downstream_headers(r)
        assert sent["baggage"].startswith("team=blue,coalmine=")
        # bound to the user it was decided for
        ctx = decode_context(find_in_baggage(sent["baggage"]), KEYRING, now=time.time(), user=user)
        assert not hasattr(ctx, "kind"), ctx
        assert ctx.channel.value == r.headers["x-coalmine-channel"] == channel.value  # type: ignore[union-attr]
        assert ctx.versions["api"] == r.headers["x-coalmine-version"]  # type: ignore[union-attr]
        assert ctx.release_id == r.headers["x-coalmine-release"]  # type: ignore[union-attr]
        assert sent["x-coalmine-user"] == user
        assert "x-coalmine-override" not in sent


async def test_a_signed_override_is_honoured(gw: Running) -> None:
    user = gw.user_in(Channel.STABLE)
    token = issue_override(
        KEYRING, app=APP, channel=Channel.CANARY, now=time.time(), ttl=60, user_key=user
    )
    r = await gw.client.get("/api/echo", headers={"x-user-id": user, "x-coalmine-override": token})
    assert (r.headers["x-coalmine-channel"], r.json()["version"]) == ("canary", "v2")


# -- streaming --------------------------------------------------------------------


async def test_large_bodies_stream_both_ways(gw: Running) -> None:
    user = gw.user_in(Channel.CANARY)
    size = 8 * 1024 * 1024
    chunk = bytes(range(256)) * 1024  # 256 KiB
    total = chunk * (size // len(chunk))

    async def body() -> AsyncIterator[bytes]:
        yield chunk
        # the upstream must see the first chunk before the client sends the rest
        await asyncio.wait_for(gw.upstream.upload_started.wait(), 5)
        for _ in range(size // len(chunk) - 1):
            yield chunk

    r = await gw.client.post("/api/upload", headers={"x-user-id": user}, content=body())
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["size"], got["sha256"]) == (size, hashlib.sha256(total).hexdigest())
    assert got["transfer_encoding"] == "chunked"

    # a body with a length keeps it
    r = await gw.client.post("/api/upload", headers={"x-user-id": user}, content=b"x" * 1000)
    assert (r.json()["size"], r.json()["content_length"]) == (1000, "1000")

    digest, received = hashlib.sha256(), 0
    async with gw.client.stream(
        "GET", f"/api/big?size={size}", headers={"x-user-id": user}
    ) as response:
        assert response.headers["x-coalmine-version"] == "v2"
        async for part in response.aiter_raw():
            digest.update(part)
            received += len(part)
    assert received == size
    block = bytes(range(256)) * 256
    assert digest.hexdigest() == hashlib.sha256(block * (size // len(block))).hexdigest()


async def test_the_first_chunk_arrives_before_the_last_is_sent(gw: Running) -> None:
    up = gw.upstream
    async with gw.client.stream("GET", "/api/chunked", headers={"x-user-id": "u"}) as response:
        assert response.status_code == 200
        chunks = response.aiter_raw()
        first = await asyncio.wait_for(anext(chunks), 5)
        assert first == b"first;"
        assert up.first_chunk_sent.is_set()
        assert not up.last_chunk_sent.is_set()
        up.send_last_chunk.set()
        rest = b"".join([part async for part in chunks])
    assert rest == b"last"
    assert up.last_chunk_sent.is_set()


async def test_a_client_that_hangs_up_mid_stream_releases_the_upstream(gw: Running) -> None:
    async with gw.client.stream("GET", "/api/chunked", headers={"x-user-id": "u"}) as response:
        assert await asyncio.wait_for(anext(response.aiter_raw()), 5) == b"first;"
    # the gateway notices the disconnect and closes its upstream connection
    await asyncio.wait_for(gw.upstream.chunked_cancelled.wait(), 5)
    assert not gw.upstream.last_chunk_sent.is_set()
    r = await gw.client.get("/api/echo", headers={"x-user-id": "u"})
    assert r.status_code == 200


# -- errors ------------------------------------------------------------------------


async def test_upstream_down_is_502_with_the_reason(gw: Running) -> None:
    r = await gw.client.get("/down/x", headers={"x-user-id": "u"})
    assert r.status_code == 502
    detail = r.json()["detail"]
    target = gw.snapshot.target_of("down", "v1")
    assert detail.startswith(f"upstream {target} for down v1 failed: "), detail
    assert "connect" in detail.lower()
    assert (r.headers["x-coalmine-version"], r.headers["x-coalmine-channel"]) == ("v1", "stable")


async def test_upstream_timeout_is_504() -> None:
    async with running(timeout=0.3) as gw:
        target = gw.snapshot.target_of("api", "v1")
        user = gw.user_in(Channel.STABLE)
        r = await gw.client.get("/api/slow", headers={"x-user-id": user})
        assert r.status_code == 504
        assert r.json() == {
            "detail": f"upstream {target} for api v1 failed: no response within 0.3s"
        }
        assert r.headers["x-coalmine-version"] == "v1"
        # a local handler that does not return in time is a 504 too
        r = await gw.client.get("/blocked", headers={"x-user-id": user})
        counter.release_blocked.set()
        assert r.status_code == 504
        assert "did not return within 0.3s" in r.json()["detail"]


async def test_a_lambda_target_whose_endpoint_is_down_is_a_502(gw: Running) -> None:
    r = await gw.client.get("/legacy", headers={"x-user-id": "u"})
    assert r.status_code == 502
    assert r.json()["detail"].startswith("Lambda legacy v1 (arn:aws:lambda:eu-west-1:")
    assert "could not be invoked at http://127.0.0.1:" in r.json()["detail"]
    assert r.headers["x-coalmine-version"] == "v1"


# -- local handlers ------------------------------------------------------------------


async def test_local_versions_of_one_module_keep_separate_globals(gw: Running) -> None:
    stable, canary = gw.user_in(Channel.STABLE), gw.user_in(Channel.CANARY)
    counts: dict[str, list[int]] = {"v1": [], "v2": []}
    for user, n in ((stable, 3), (canary, 2)):
        for _ in range(n):
            r = await gw.client.get("/greet/hi", headers={"x-user-id": user})
            assert r.status_code == 200, r.text
            body = r.json()
            version = r.headers["x-coalmine-version"]
            assert body["version"] == version
            assert body["module"] == f"coalmine_fn.greet.{version}.tests.gateway.fixtures.counter"
            counts[version].append(body["count"])
    assert counts == {"v1": [1, 2, 3], "v2": [1, 2]}
    assert counter.count == 0  # the module imported normally is a third namespace
    runtime = gw.gateway.targets[TargetKind.LOCAL]
    assert isinstance(runtime, LocalTarget)
    ref = "tests.gateway.fixtures.counter:handler"
    v1, v2 = runtime.module("greet", "v1", ref), runtime.module("greet", "v2", ref)
    assert v1 is not None
    assert v2 is not None
    assert v1 is not v2
    assert (v1.count, v2.count) == (3, 2)


async def test_local_versions_from_different_files(gw: Running) -> None:
    stable, canary = gw.user_in(Channel.STABLE), gw.user_in(Channel.CANARY)
    a = (await gw.client.get("/orders", headers={"x-user-id": stable})).json()
    b = (await gw.client.get("/orders", headers={"x-user-id": canary})).json()
    assert (a["file"], a["served"], b["file"], b["served"]) == ("orders_v1", 1, "orders_v2", 101)
    assert a["module"] == "coalmine_fn.orders.v1.tests.gateway.fixtures.orders_v1"


async def test_a_local_handler_gets_a_lambda_event_and_runs_in_the_sdk_scope(gw: Running) -> None:
    user = gw.user_in(Channel.CANARY)
    r = await gw.client.post(
        "/greet/items/7?a=1&a=2&b=",
        headers={"x-user-id": user, "baggage": "team=blue", "cookie": "c1=1; c2=2"},
        content='{"n": 1}',
    )
    assert r.status_code == 200
    assert (r.headers["x-handler"], r.headers["x-coalmine-version"]) == ("counter", "v2")
    body = r.json()
    event = body["event"]
    assert event["version"] == "2.0"
    assert (event["rawPath"], event["rawQueryString"]) == ("/greet/items/7", "a=1&a=2&b=")
    assert event["queryStringParameters"] == {"a": "1,2", "b": ""}
    assert event["pathParameters"] == {"proxy": "items/7"}
    assert event["requestContext"]["http"]["method"] == "POST"
    assert event["requestContext"]["requestId"] == body["request_id"]
    assert (event["body"], event["isBase64Encoded"]) == ('{"n": 1}', False)
    assert event["cookies"] == ["c1=1", "c2=2"]
    headers = event["headers"]
    assert headers["x-coalmine-user"] == user
    token = find_in_baggage(headers["baggage"])
    assert headers["baggage"].startswith("team=blue,coalmine=")
    assert body["scope_token"] == token  # instrumented clients would send this on
    assert body["scope_channel"] == "canary"
    assert (body["function"], body["version"]) == ("greet", "v2")
    assert 0 < body["remaining_ms"] <= 30_000


async def test_a_local_handlers_instrumented_calls_carry_the_gateways_context(
    gw: Running,
) -> None:
    from coalmine.sdk.instrument import instrument_httpx, uninstrument_httpx

    user = gw.user_in(Channel.CANARY)
    instrument_httpx()
    try:
        r = await gw.client.get(
            "/chain",
            params={"next": f"{gw.upstream.url}/v1/echo"},
            headers={"x-user-id": user, "baggage": "team=blue"},
        )
    finally:
        uninstrument_httpx()
    assert r.status_code == 200, r.text
    sent = {k.lower(): v for k, v in r.json()["headers"]}
    ctx = decode_context(find_in_baggage(sent["baggage"]), KEYRING, now=time.time())
    assert not hasattr(ctx, "kind"), ctx
    assert (ctx.channel, ctx.release_id) == (Channel.CANARY, RELEASE_ID)  # type: ignore[union-attr]
    assert r.headers["x-coalmine-channel"] == "canary"


async def test_local_binary_bodies_plain_values_and_exceptions(gw: Running) -> None:
    payload = bytes(range(256))
    r = await gw.client.post("/echo", headers={"x-user-id": "u"}, content=payload)
    assert (r.status_code, r.content) == (201, payload)
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["set-cookie"] == "flavour=plain; Path=/"

    r = await gw.client.get("/plain", headers={"x-user-id": "u"})
    assert (r.status_code, r.json()) == (200, ["any", "json", 1])

    r = await gw.client.get("/boom", headers={"x-user-id": "u"})
    assert r.status_code == 502
    assert r.json() == {
        "detail": "local handler tests.gateway.fixtures.counter:boom for boom v1 raised"
        " ValueError: kaboom",
        "error": {"type": "ValueError", "message": "kaboom"},
    }
    assert (r.headers["x-coalmine-version"], r.headers["x-coalmine-channel"]) == ("v1", "stable")


async def test_a_local_body_over_the_limit_is_413() -> None:
    async with running(max_local_body=1000) as gw:
        r = await gw.client.post("/echo", headers={"x-user-id": "u"}, content=b"x" * 1001)
        assert r.status_code == 413
        assert "1000 bytes" in r.json()["detail"]


async def test_a_broken_target_reference_is_a_502(gw: Running) -> None:
    snap = gw.snapshot
    targets = {**snap.targets, "plain": {"v1": "tests.gateway.fixtures.no_such_module:handler"}}
    gw.source.set(replace(snap, targets=targets, revision=2))
    r = await gw.client.get("/plain", headers={"x-user-id": "u"})
    assert r.status_code == 502
    assert r.json()["detail"] == (
        "local handler tests.gateway.fixtures.no_such_module:handler for plain v1 could not be"
        " loaded: ModuleNotFoundError: no module named 'tests.gateway.fixtures.no_such_module'"
    )


async def test_without_a_release_nothing_is_pinned_and_forged_members_are_removed(
    gw: Running,
) -> None:
    from coalmine.core.routing import RoutingState

    targets = {**gw.snapshot.targets, "fresh": {"v1": "tests.gateway.fixtures.counter:plain"}}
    state = RoutingState(app=APP, versions={"api": "v1", "plain": "v1"})
    gw.source.set(RoutingSnapshot(state, 5, targets))
    forged = canary_context(OTHER_KEYRING)
    r = await gw.client.get(
        "/api/echo", headers={"x-user-id": "u", "baggage": f"coalmine={forged},team=blue"}
    )
    assert (r.headers["x-coalmine-version"], r.headers["x-coalmine-channel"]) == ("v1", "stable")
    assert "x-coalmine-release" not in r.headers
    assert downstream_headers(r)["baggage"] == "team=blue"
    # a function with targets but no current version has nothing to run
    r = await gw.client.get("/fresh", headers={"x-user-id": "u"})
    assert (r.status_code, r.json()) == (
        503,
        {"detail": "function fresh of app shop has no version to run yet"},
    )
    assert r.headers["x-coalmine-channel"] == "stable"
