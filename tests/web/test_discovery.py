"""Discovery for client-side routing: answers agree with core.evaluate, ETag, auth, URLs,
signed contexts and pinning, and the SSE stream that follows a rollback within a second."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import queue
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from typing import Any, cast

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalmine.core.context import RoutingContext, decode_context, encode_context
from coalmine.core.errors import InvalidInput
from coalmine.core.machine import Tick
from coalmine.core.model import Channel, Decision, Phase, Reason, Release
from coalmine.core.routing import RoutingState, evaluate
from coalmine.core.signing import Keyring
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.core.strategy import parse_strategy
from coalmine.web import create_app
from coalmine.web.discovery import (
    CONTEXT_WINDOW_SECONDS,
    OPENFEATURE_REASONS,
    DiscoverySettings,
    action_url,
    answer_bytes,
    answer_etag,
    canonical,
    discover,
    ofrep_flag,
    ofrep_flags,
    same_answer,
)
from coalmine.web.routes.discovery import answer_events
from coalmine.web.sse import KEEPALIVE, SnapshotStream
from tests.web.conftest import ADMIN_SECRET, Web, bearer, read_events, running, serve

KEYS = Keyring.single("discovery-test-secret-0123456789", kid="t1")
GATEWAY = "https://gw.example.com/shop/"
HTTP_DOC = """\
app: shop
functions:
  api:
    versions:
      v1: https://api-v1.example.com/
      v2: https://api-v2.example.com/
    current: v1
  worker:
    versions:
      v1: shop.worker:handler
      v2: shop.worker_v2:handler
    current: v1
"""
USERS = [f"user-{i}" for i in range(10_000)]


def start_release(web: Web, candidate: dict[str, str] | None = None, **extra: Any) -> str:
    """Start a release of shop and take its first step (30% exposure)."""
    body = {"candidate": candidate or {"api": "v2", "worker": "v2"}, "strategy": "30%:5m, 100%"}
    r = web.client.post(
        "/v1/apps/shop/releases", json={**body, **extra}, headers=web.as_("deployer")
    )
    assert r.status_code == 201, r.text
    rid: str = r.json()["id"]
    web.service.releases.advance(rid, Tick(time.time() + 1e6))
    return rid


def find_user(web: Web, channel: Channel) -> str:
    state = web.service.snapshots.snapshot("shop").state
    for user in USERS:
        d = evaluate(state, user, keyring=None, now=0)
        if d.channel is channel and d.reason is Reason.COHORT:
            return user
    raise AssertionError(f"no {channel} user")


@contextmanager
def shop(url: str, **kwargs: Any) -> Iterator[tuple[Web, str]]:
    """The API with HTTP_DOC applied and a 30% release running; yields it and shop's browser
    key (what a page holds)."""
    kwargs.setdefault("signing_keys", KEYS)
    with running(url, **kwargs) as web:
        web.apply(HTTP_DOC)
        start_release(web, targeting={"always_canary": ["user-7"]})
        yield web, web.browser_key("shop")


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch, admin_env: str) -> None:
    monkeypatch.delenv("COALMINE_SIGNING_KEYS", raising=False)
    monkeypatch.delenv("COALMINE_GATEWAY_URL", raising=False)


def ask(web: Web, key: str, **params: Any) -> httpx.Response:
    r: httpx.Response = web.client.get(
        "/v1/discovery", params={"app": "shop", **params, "key": key}
    )
    return r


def test_batch_answers_equal_core_evaluate_for_10000_users(sqlite_url: str, no_env: None) -> None:
    with shop(sqlite_url, gateway_url=GATEWAY) as (web, _):
        snapshot = web.service.snapshots.snapshot("shop")
        start = time.perf_counter()
        r = web.client.post(
            "/v1/discovery/batch",
            json={"app": "shop", "users": USERS},
            headers=bearer(web.sdk_key("shop")),
        )
        elapsed = time.perf_counter() - start
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["app"], body["revision"]) == ("shop", snapshot.revision)
        answers = body["answers"]
        assert [a["user"] for a in answers] == USERS
        canary = 0
        now = time.time()
        for user, answer in zip(USERS, answers, strict=True):
            d = evaluate(snapshot.state, user, keyring=KEYS, now=now)
            assert (answer["channel"], answer["reason"]) == (str(d.channel), str(d.reason))
            assert answer["versions"] == dict(d.versions)
            canary += d.channel is Channel.CANARY
        assert 2700 < canary < 3300  # 30% exposure
        assert (answers[7]["channel"], answers[7]["reason"]) == ("canary", "targeted")
        assert elapsed < 5, f"10,000 answers took {elapsed:.2f}s"

        # the per-user endpoint gives the very same answers
        browser = web.browser_key("shop")
        for answer in answers[::500]:
            r = ask(web, browser, user=answer["user"])
            assert r.status_code == 200
            assert r.json() == answer


def test_answer_shape_urls_and_etag(sqlite_url: str, no_env: None) -> None:
    with shop(sqlite_url, gateway_url=GATEWAY) as (web, key):
        user = find_user(web, Channel.CANARY)
        r = ask(web, key, user=user)
        assert r.status_code == 200
        answer = r.json()
        assert set(answer) == {
            "app", "user", "channel", "reason", "detail", "release", "versions", "actions",
            "context", "revision",
        }  # fmt: skip
        assert answer["channel"] == "canary"
        assert answer["reason"] == "cohort"
        assert answer["release"] == {"id": "shop-1", "phase": "running", "exposure": 3000}
        assert answer["versions"] == {"api": "v2", "worker": "v2"}
        assert answer["actions"] == {
            # an http(s) target is called directly; anything else through the gateway
            "api": {"version": "v2", "url": "https://api-v2.example.com/"},
            "worker": {"version": "v2", "url": "https://gw.example.com/shop/worker"},
        }
        assert r.headers["access-control-allow-origin"] == "*"
        etag = r.headers["etag"]
        assert etag.startswith('W/"')
        assert etag == answer_etag(answer)

        for header in (etag, etag.removeprefix("W/"), f'"x", {etag}', "*"):
            r = web.client.get(
                "/v1/discovery",
                params={"app": "shop", "user": user},
                headers={**bearer(key), "If-None-Match": header},
            )
            assert (r.status_code, r.content) == (304, b""), header
            assert r.headers["etag"] == etag

        # a change that does not touch this user's answer keeps the ETag
        r = web.client.post(
            "/v1/apps/shop/functions/api/versions",
            json={"name": "v3", "target": "https://api-v3.example.com/"},
            headers=web.as_("deployer"),
        )
        assert r.status_code == 201
        r = ask(web, key, user=user)
        assert r.json()["revision"] > answer["revision"]
        assert r.headers["etag"] == etag

        # a rollback moves it
        assert web.client.post(
            "/v1/releases/shop-1/rollback", headers=web.as_("deployer")
        ).is_success
        r = web.client.get(
            "/v1/discovery",
            params={"app": "shop", "user": user, "key": key},
            headers={"If-None-Match": etag},
        )
        assert r.status_code == 200
        assert r.headers["etag"] != etag
        assert (r.json()["channel"], r.json()["reason"]) == ("stable", "rolled_back")
        assert r.json()["versions"] == {"api": "v1", "worker": "v1"}


def test_urls_without_gateway_and_from_the_environment(
    sqlite_url: str, no_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with shop(sqlite_url) as (web, key):
        actions = ask(web, key, user="u").json()["actions"]
        assert actions["worker"]["url"] is None
        assert actions["api"]["url"].startswith("https://api-v")
    monkeypatch.setenv("COALMINE_GATEWAY_URL", "http://127.0.0.1:8080")
    with shop(sqlite_url.replace(".db", "2.db")) as (web, key):
        actions = ask(web, key, user="u").json()["actions"]
        assert actions["worker"]["url"] == "http://127.0.0.1:8080/worker"


def test_auth(sqlite_url: str, no_env: None) -> None:
    with shop(sqlite_url) as (web, key):
        assert web.client.post("/v1/apps", json={"name": "blog"}, headers=web.as_("deployer"))
        blog_key = web.browser_key("blog")
        sdk_key = web.sdk_key("shop")
        params = {"app": "shop", "user": "u"}
        c = web.client
        assert c.get("/v1/discovery", params=params, headers=bearer(key)).status_code == 200
        assert c.get("/v1/discovery", params={**params, "key": key}).status_code == 200
        assert c.get("/v1/discovery", params=params, headers=bearer(sdk_key)).status_code == 200
        assert c.get("/v1/discovery", params=params, headers=web.as_("viewer")).status_code == 200

        r = c.get("/v1/discovery", params={**params, "key": blog_key})
        assert r.status_code == 403
        assert "answers only for app 'blog'" in r.json()["detail"]
        assert r.headers["access-control-allow-origin"] == "*"
        r = c.get("/v1/discovery", params=params)
        assert r.status_code == 401
        assert r.json()["detail"].startswith("missing key")
        r = c.get("/v1/discovery", params={**params, "key": "cmpub_nope-nope-nope-nope"})
        assert (r.status_code, r.json()["detail"]) == (401, "invalid or revoked token")
        # only browser keys in the URL
        r = c.get("/v1/discovery", params={**params, "key": web.secrets["viewer"]})
        assert r.status_code == 403
        assert "only a browser key" in r.json()["detail"]
        r = c.get("/v1/discovery", params={**params, "key": sdk_key})
        assert r.status_code == 403
        assert "sdk key is a server credential" in r.json()["detail"]
        # a browser key asks for one user at a time
        r = c.post("/v1/discovery/batch", json={"app": "shop", "users": ["a"]}, headers=bearer(key))
        assert r.status_code == 403
        assert "one user at a time" in r.json()["detail"]

        r = c.get("/v1/discovery", params={"app": "shop"}, headers=bearer(key))
        assert (r.status_code, r.json()) == (400, {"detail": "pass user=<the user's key>"})
        r = c.get("/v1/discovery", params={"user": "u"}, headers=bearer(key))
        assert (r.status_code, r.json()) == (400, {"detail": "pass app=<the app's name>"})
        r = c.get("/v1/discovery", params={"app": "nope", "user": "u"}, headers=web.as_("viewer"))
        assert (r.status_code, r.json()) == (404, {"detail": "no app named 'nope'"})

        r = c.post("/v1/discovery/batch", json={"app": "shop", "users": ["a"]})
        assert r.status_code == 401
        r = c.post(
            "/v1/discovery/batch",
            json={"app": "shop", "users": ["a"]},
            params={"key": blog_key},
        )
        assert r.status_code == 403
        r = c.post(
            "/v1/discovery/batch", json={"app": "shop", "users": [*USERS, "one-more"]},
            headers=bearer(sdk_key),
        )  # fmt: skip
        assert r.status_code == 422
        r = c.post(
            "/v1/discovery/batch", json={"app": "nope", "users": ["a"]}, headers=web.as_("viewer")
        )
        assert r.status_code == 404

        r = c.options("/v1/discovery", headers={"Origin": "https://app.example.com"})
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == "*"
        assert "baggage" in r.headers["access-control-allow-headers"]


def test_signed_context_present_decodable_and_pinning(sqlite_url: str, no_env: None) -> None:
    with shop(sqlite_url) as (web, key):
        canary, stable = find_user(web, Channel.CANARY), find_user(web, Channel.STABLE)
        now = time.time()
        answer = ask(web, key, user=canary).json()
        ctx = decode_context(answer["context"], KEYS, now=now)
        assert isinstance(ctx, RoutingContext), ctx
        assert (ctx.app, ctx.release_id, ctx.channel) == ("shop", "shop-1", Channel.CANARY)
        assert dict(ctx.versions) == answer["versions"]
        lives = ctx.expires_at - now
        assert 3600 - CONTEXT_WINDOW_SECONDS - 1 <= lives <= 3600

        # the canary user's context pins that user's later answers
        pinned = ask(web, key, user=canary, context=answer["context"]).json()
        assert (pinned["channel"], pinned["reason"]) == ("canary", "pinned")
        assert pinned["versions"] == answer["versions"]
        # and no one else's: a stable user who carries it is decided afresh, and told why
        laundered = ask(web, key, user=stable, context=answer["context"]).json()
        assert (laundered["channel"], laundered["reason"]) == ("stable", "cohort")
        assert "routing context ignored (other_user)" in laundered["detail"]
        assert isinstance(
            decode_context(laundered["context"], KEYS, now=now, user=stable), RoutingContext
        )
        assert ask(web, key, user=stable).json()["channel"] == "stable"

        # a forged context is ignored, and the answer says why
        forged = encode_context(
            Decision(
                "shop", "shop-1", Channel.CANARY, {"api": "v2", "worker": "v2"}, Reason.COHORT
            ),
            Keyring.single("another-secret-0123456789abcdef", kid="t1"),
            now=now,
        )
        r = ask(web, key, user=stable, context=forged).json()
        assert (r["channel"], r["reason"]) == ("stable", "cohort")
        assert "bad_signature" in r["detail"]

        # a rolled-back release sends its pinned canary chain to the baseline
        assert web.client.post(
            "/v1/releases/shop-1/rollback", headers=web.as_("deployer")
        ).is_success
        r = ask(web, key, user=canary, context=answer["context"]).json()
        assert (r["channel"], r["reason"]) == ("stable", "rolled_back")
        assert r["versions"] == {"api": "v1", "worker": "v1"}


def test_no_context_without_keys_and_keys_from_the_environment(
    sqlite_url: str, no_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with shop(sqlite_url, signing_keys=None, stored_signing_keys=False) as (web, key):
        answer = ask(web, key, user="u").json()
        assert answer["context"] is None
        r = ask(web, key, user="u", context="1.t1.abc.def").json()
        assert "no signing key configured" in r["detail"]
    monkeypatch.setenv(
        "COALMINE_SIGNING_KEYS", "e1:env-secret-0123456789abcdef,e0:old-secret-0123456789"
    )
    with shop(sqlite_url.replace(".db", "2.db"), signing_keys=None) as (web, key):
        answer = ask(web, key, user="u").json()
        assert answer["context"].startswith("1.e1.")
    monkeypatch.setenv("COALMINE_SIGNING_KEYS", "nonsense")
    with pytest.raises(InvalidInput, match="COALMINE_SIGNING_KEYS"):
        create_app(database_url=sqlite_url)


def test_settings_and_helpers() -> None:
    assert action_url("api", "https://x.example/", None) == "https://x.example/"
    assert action_url("api", "http://x.example/", "https://gw") == "http://x.example/"
    assert action_url("api", "pkg.mod:handler", "https://gw") == "https://gw/api"
    assert action_url("api", "arn:aws:lambda:eu-west-1:1:function:f:3", None) is None
    assert action_url("api", None, None) is None
    assert DiscoverySettings(gateway_url="https://gw/").gateway_url == "https://gw"
    with pytest.raises(InvalidInput, match="http"):
        DiscoverySettings(gateway_url="gw.example.com")
    with pytest.raises(InvalidInput, match="context_ttl"):
        DiscoverySettings(context_ttl=10)
    assert DiscoverySettings.load(env={"COALMINE_GATEWAY_URL": " https://g "}).gateway_url == (
        "https://g"
    )
    assert DiscoverySettings.load(env={}).keyring is None
    a = {"app": "shop", "channel": "stable", "revision": 1}
    assert same_answer(a, {**a, "revision": 2})
    assert not same_answer(a, {**a, "channel": "canary"})
    assert not same_answer(None, a)
    assert answer_etag(a) == answer_etag({**a, "revision": 9})
    assert set(OPENFEATURE_REASONS) == set(Reason)


class _FakeStream:
    """Stands in for SnapshotStream: yields the given items, then ends."""

    def __init__(self, items: list[RoutingSnapshot | None]) -> None:
        self.items = items
        self.closed = False
        self.revoked = False

    async def snapshots(self) -> AsyncGenerator[RoutingSnapshot | None, None]:
        for item in self.items:
            yield item

    def close(self) -> None:
        self.closed = True


def test_stream_sends_only_changes_and_renews_the_context(sqlite_url: str, no_env: None) -> None:
    with shop(sqlite_url) as (web, _):
        snap = web.service.snapshots.snapshot("shop")
    user = "user-1"
    clock = iter([1000.0, 1001.0, 1002.0, 1000.0 + CONTEXT_WINDOW_SECONDS, 1999.0])
    settings = DiscoverySettings(KEYS)

    def build(snapshot: RoutingSnapshot, now: float) -> dict[str, Any]:
        return discover(snapshot, user, settings, now=now)

    async def collect(stream: _FakeStream, s: DiscoverySettings) -> list[str]:
        events = answer_events(cast(SnapshotStream, stream), build, s, clock=lambda: next(clock))
        return [e async for e in events]

    # first, same snapshot again (nothing sent), heartbeat (keepalive), window rolls (renewed)
    stream = _FakeStream([snap, snap, None, None])
    out = asyncio.run(collect(stream, settings))
    assert stream.closed
    assert out[0].startswith("retry: 1000\nevent: discovery\n")
    assert out[1] == KEEPALIVE
    assert out[2].startswith("event: discovery\n")
    first = json.loads(out[0].split("data: ", 1)[1])
    renewed = json.loads(out[2].split("data: ", 1)[1])
    assert first["context"] != renewed["context"]
    assert {**first, "context": None} == {**renewed, "context": None}
    assert len(out) == 3


def _next(q: queue.Queue[tuple[float, str, Any] | None], kind: str) -> tuple[float, Any]:
    deadline = time.monotonic() + 5
    while True:
        item = q.get(timeout=max(0.0, deadline - time.monotonic()))
        assert item is not None
        assert item[1] != "end", "the stream ended"
        if item[1] == kind:
            return item[0], item[2]
        assert item[1] == "comment", f"unexpected {item}"


def test_stream_follows_a_rollback_within_a_second(database_url: str, admin_env: str) -> None:
    app = create_app(database_url=database_url, heartbeat=0.3, signing_keys=KEYS)
    with serve(app) as base, httpx.Client(base_url=base, headers=bearer(ADMIN_SECRET)) as api:
        r = api.post("/v1/apply", content=HTTP_DOC, headers={"Content-Type": "application/yaml"})
        assert r.status_code == 200, r.text
        rel = api.post(
            "/v1/apps/shop/releases",
            json={"candidate": {"api": "v2"}, "strategy": "30%:5m, 100%"},
        ).json()
        app.state.plane.releases.advance(rel["id"], Tick(time.time() + 1e6))
        key = api.post("/v1/tokens", json={"name": "web", "role": "browser", "app": "shop"}).json()[
            "token"
        ]
        state = app.state.plane.snapshots.snapshot("shop").state
        user = next(u for u in USERS if evaluate(state, u, keyring=None, now=0).is_canary)

        r = api.get("/v1/discovery/stream", params={"app": "nope", "user": "u"})
        assert r.status_code == 404
        r = api.get("/v1/discovery/stream", params={"app": "shop"})
        assert r.status_code == 400

        events: queue.Queue[tuple[float, str, Any] | None] = queue.Queue()
        client = httpx.Client(base_url=base, timeout=httpx.Timeout(10, read=30))
        params = {"app": "shop", "user": user, "key": key}  # as an EventSource would
        with client.stream("GET", "/v1/discovery/stream", params=params) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["access-control-allow-origin"] == "*"
            reader = threading.Thread(target=read_events, args=(response, events), daemon=True)
            reader.start()
            _, first = _next(events, "discovery")
            assert (first["channel"], first["versions"]["api"]) == ("canary", "v2")

            # a change that leaves this user's answer alone sends nothing
            r = api.post(
                "/v1/apps/shop/functions/worker/versions",
                json={"name": "v9", "target": "shop.worker_v9:handler"},
            )
            assert r.status_code == 201
            time.sleep(0.4)
            while not events.empty():
                item = events.get_nowait()
                assert item is not None
                assert item[1] == "comment", item

            r = api.post(f"/v1/releases/{rel['id']}/rollback", json={"reason": "errors"})
            answered = time.monotonic()
            assert r.status_code == 200
            at, after = _next(events, "discovery")
            latency = at - answered
            assert latency < 1.0, f"the rollback reached the subscriber after {latency:.3f}s"
            assert (after["channel"], after["reason"]) == ("stable", "rolled_back")
            assert after["versions"]["api"] == "v1"
            print(f"discovery stream: rollback reached the subscriber in {latency * 1000:.0f} ms")
            response.close()
        client.close()
        reader.join(timeout=5)


def test_discovery_never_extends_a_context_it_pins(sqlite_url: str, no_env: None) -> None:
    """A client that asks again with its context every window keeps the first expiry: the
    context dies when it said it would (then the user is decided afresh)."""
    with shop(sqlite_url) as (web, _key):
        canary = find_user(web, Channel.CANARY)
        snapshot = web.service.snapshots.snapshot("shop")
        settings = DiscoverySettings(KEYS)
        t0 = time.time()
        first = discover(snapshot, canary, settings, now=t0)
        token = first["context"]
        ctx0 = decode_context(token, KEYS, now=t0)
        assert isinstance(ctx0, RoutingContext)
        at = t0
        while at < ctx0.expires_at - CONTEXT_WINDOW_SECONDS:
            at += CONTEXT_WINDOW_SECONDS
            again = discover(snapshot, canary, settings, now=at, context=token)
            assert again["reason"] == "pinned"
            got = decode_context(again["context"], KEYS, now=at)
            assert isinstance(got, RoutingContext)
            assert got.expires_at == ctx0.expires_at
            token = again["context"]
        late = discover(snapshot, canary, settings, now=ctx0.expires_at + 1, context=token)
        assert late["reason"] == "cohort"
        assert "(expired)" in late["detail"]


_NAMES = st.from_regex(r"[a-z0-9](?:[a-z0-9_-]{0,10}[a-z0-9])?", fullmatch=True)


@given(
    functions=st.lists(
        st.one_of(st.just("revision"), st.just("user"), _NAMES), min_size=1, max_size=4, unique=True
    ),
    user=st.text(min_size=1, max_size=40),
    revision=st.integers(min_value=0, max_value=10**12),
    exposure=st.integers(min_value=0, max_value=10_000),
    keyed=st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_answer_bytes_and_ofrep_flags_equal_their_definitions(
    functions: list[str], user: str, revision: int, exposure: int, keyed: bool
) -> None:
    """One encoding gives the bytes and the ETag, and the flags built together are each
    flag's own evaluation, whatever the user key, the functions' names, the channel."""
    current = dict.fromkeys(functions, "v1")
    release = Release.start(
        id="shop-1",
        app="shop",
        current=current,
        changes={functions[0]: "v2"},
        salt="salt-0123456789abcdef",
        strategy=parse_strategy("Canary10Percent5Minutes"),
    )
    release = dataclasses.replace(release, exposure=exposure, phase=Phase.RUNNING)
    snapshot = RoutingSnapshot(
        RoutingState("shop", current, release),
        revision,
        {fn: {"v1": f"https://x.example/{fn}", "v2": "m.v2:h"} for fn in functions},
    )
    settings_ = DiscoverySettings(KEYS if keyed else None, GATEWAY)
    answer = discover(snapshot, user, settings_, now=1e9)
    assert (answer["context"] is not None) is keyed
    assert answer_bytes(answer) == (canonical(answer), answer_etag(answer))
    keys = ["shop", *(f"shop.{fn}" for fn in sorted(functions))]
    assert ofrep_flags(answer) == [ofrep_flag(answer, key) for key in keys]
