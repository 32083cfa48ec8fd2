"""OFREP over discovery: single and bulk shapes, ETag/304, OFREP error shapes, reasons."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from coalmine.core.machine import Tick
from coalmine.core.model import Channel, Reason
from coalmine.core.override import issue_override
from coalmine.core.routing import evaluate
from coalmine.web.discovery import OPENFEATURE_REASONS
from tests.web.conftest import Web, bearer
from tests.web.test_discovery import KEYS, find_user, shop, start_release

FLAGS = "/ofrep/v1/evaluate/flags"


def flag(web: Web, key: str, body: Any, **headers: str) -> httpx.Response:
    r: httpx.Response = web.client.post(f"{FLAGS}/{key}", json=body, headers=headers)
    return r


def user(name: str, **more: Any) -> dict[str, Any]:
    return {"context": {"targetingKey": name, **more}}


@pytest.fixture
def shop_web(sqlite_url: str, admin_env: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("COALMINE_GATEWAY_URL", raising=False)
    with shop(sqlite_url) as pair:
        yield pair


def test_single_flag_shapes(shop_web: tuple[Web, str]) -> None:
    web, key = shop_web
    canary, stable = find_user(web, Channel.CANARY), find_user(web, Channel.STABLE)
    auth = {"X-API-Key": key}

    r = flag(web, "shop", user(canary), **auth)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"key", "value", "reason", "variant", "metadata"}
    assert (body["key"], body["value"], body["variant"], body["reason"]) == (
        "shop",
        "canary",
        "canary",
        "SPLIT",
    )
    meta = body["metadata"]
    assert meta["release_id"] == "shop-1"
    assert (meta["reason"], meta["channel"], meta["exposure"]) == ("cohort", "canary", 3000)
    assert meta["context"].startswith("1.t1.")
    assert all(isinstance(v, str | int | bool) for v in meta.values())  # OFREP metadata

    r = flag(web, "shop", user(stable), Authorization=f"Bearer {key}")
    assert (r.json()["value"], r.json()["reason"]) == ("stable", "SPLIT")

    # <app>.<function>: the URL to call, else the version name
    api = flag(web, "shop.api", user(canary), **auth).json()
    assert (api["value"], api["variant"]) == ("https://api-v2.example.com/", "v2")
    assert api["metadata"]["function"] == "api"
    worker = flag(web, "shop.worker", user(stable), **auth).json()
    assert (worker["value"], worker["variant"]) == ("v1", "v1")  # no URL, no gateway

    # the evaluation agrees with the one routing function
    state = web.service.snapshots.snapshot("shop").state
    for name in (f"user-{i}" for i in range(0, 400, 7)):
        d = evaluate(state, name, keyring=None, now=time.time())
        got = flag(web, "shop.api", user(name), **auth).json()
        assert got["variant"] == d.versions["api"]
        assert got["metadata"]["channel"] == str(d.channel)


def test_bulk_shape_etag_and_304(shop_web: tuple[Web, str]) -> None:
    web, key = shop_web
    canary = find_user(web, Channel.CANARY)
    auth = {"X-API-Key": key}
    r = web.client.post(FLAGS, json=user(canary), headers=auth)
    assert r.status_code == 200
    flags = r.json()["flags"]
    assert [f["key"] for f in flags] == ["shop", "shop.api", "shop.worker"]
    for f in flags:
        assert f == flag(web, f["key"], user(canary), **auth).json()
    etag = r.headers["etag"]
    assert etag.startswith('W/"')

    r = web.client.post(FLAGS, json=user(canary), headers={**auth, "If-None-Match": etag})
    assert (r.status_code, r.content, r.headers["etag"]) == (304, b"", etag)
    # another user, another answer: the ETag does not match
    stable = find_user(web, Channel.STABLE)
    r = web.client.post(FLAGS, json=user(stable), headers={**auth, "If-None-Match": etag})
    assert r.status_code == 200
    assert r.headers["etag"] != etag
    # a rollback changes the canary user's flags
    assert web.client.post("/v1/releases/shop-1/rollback", headers=web.as_("deployer")).is_success
    r = web.client.post(FLAGS, json=user(canary), headers={**auth, "If-None-Match": etag})
    assert r.status_code == 200
    assert r.json()["flags"][0]["value"] == "stable"
    assert r.json()["flags"][0]["reason"] == "DISABLED"


def test_errors_have_ofrep_shapes(shop_web: tuple[Web, str]) -> None:
    web, key = shop_web
    auth = {"X-API-Key": key}
    c = web.client

    def single(content: bytes) -> httpx.Response:
        r: httpx.Response = c.post(
            f"{FLAGS}/shop", content=content, headers={**auth, "Content-Type": "application/json"}
        )
        return r

    cases = [
        (b"{not json", "PARSE_ERROR"),
        (b"[1, 2]", "PARSE_ERROR"),
        (b'{"context": "u"}', "INVALID_CONTEXT"),
        (b'{"context": {"targetingKey": 7}}', "INVALID_CONTEXT"),
        (b'{"context": {"targetingKey": "u", "coalmineContext": 7}}', "INVALID_CONTEXT"),
        (b'{"context": {}}', "TARGETING_KEY_MISSING"),
        (b'{"context": {"targetingKey": ""}}', "TARGETING_KEY_MISSING"),
        (b"{}", "TARGETING_KEY_MISSING"),
    ]
    for content, code in cases:
        r = single(content)
        assert r.status_code == 400, content
        assert set(r.json()) == {"key", "errorCode", "errorDetails"}
        assert (r.json()["key"], r.json()["errorCode"]) == ("shop", code), content
        r = c.post(FLAGS, content=content, headers={**auth, "Content-Type": "application/json"})
        assert r.status_code == 400
        assert set(r.json()) == {"errorCode", "errorDetails"}
        assert r.json()["errorCode"] == code

    for missing in ("nope", "shop.nope", "shop.", "blog.api"):
        r = flag(web, missing, user("u"), **auth)
        assert r.status_code == 404
        assert (r.json()["key"], r.json()["errorCode"]) == (missing, "FLAG_NOT_FOUND")
        assert "shop.api" in r.json()["errorDetails"]

    r = flag(web, "shop", user("u"))
    assert r.status_code == 401
    assert set(r.json()) == {"errorDetails"}
    r = flag(web, "shop", user("u"), **{"X-API-Key": "cmsdk_wrong-wrong-wrong-wrong"})
    assert (r.status_code, r.json()) == (401, {"errorDetails": "invalid or revoked token"})
    r = flag(web, "shop", user("u"), **web.as_("viewer"))
    assert r.status_code == 403
    assert "sdk key" in r.json()["errorDetails"]
    r = c.post(FLAGS, json=user("u"), headers=web.as_("admin"))
    assert r.status_code == 403

    # the sdk key's app defines the flag set: another app's key does not see shop's flags
    assert c.post("/v1/apps", json={"name": "blog"}, headers=web.as_("deployer")).is_success
    blog = web.sdk_key("blog")
    r = flag(web, "shop", user("u"), **bearer(blog))
    assert (r.status_code, r.json()["errorCode"]) == (404, "FLAG_NOT_FOUND")
    r = c.post(FLAGS, json=user("u"), headers=bearer(blog))
    assert r.json() == {
        "flags": [
            {
                "key": "blog",
                "value": "stable",
                "variant": "stable",
                "reason": "DEFAULT",
                "metadata": {"reason": "no_release", "channel": "stable"},
            }
        ]
    }

    r = c.options(f"{FLAGS}/shop", headers={"Origin": "https://app.example.com"})
    assert r.status_code == 204
    assert "X-API-Key" in r.headers["access-control-allow-headers"]


def test_reasons_map_to_openfeature(shop_web: tuple[Web, str]) -> None:
    web, key = shop_web
    auth = {"X-API-Key": key}
    stable = find_user(web, Channel.STABLE)
    canary_answer = web.client.get(
        "/v1/discovery",
        params={"app": "shop", "user": find_user(web, Channel.CANARY), "key": key},
    ).json()

    def reason(body: dict[str, Any]) -> tuple[str, str, str]:
        got = flag(web, "shop", body, **auth).json()
        return got["value"], got["reason"], got["metadata"]["reason"]

    assert reason(user(stable)) == ("stable", "SPLIT", "cohort")
    assert reason(user("user-7")) == ("canary", "TARGETING_MATCH", "targeted")
    token = issue_override(
        KEYS, app="shop", channel=Channel.CANARY, now=time.time(), ttl=60, user_key=stable
    )
    r = web.client.get(
        "/v1/discovery", params={"app": "shop", "user": stable, "override": token, "key": key}
    )
    assert (r.json()["channel"], r.json()["reason"]) == ("canary", "override")
    pinned = user(canary_answer["user"], coalmineContext=canary_answer["context"])
    assert reason(pinned) == ("canary", "STATIC", "pinned")
    # another user's context grants nothing
    laundered = user(stable, coalmineContext=canary_answer["context"])
    assert reason(laundered) == ("stable", "SPLIT", "cohort")

    r = web.client.post("/v1/releases/shop-1/promote", headers=web.as_("deployer"))
    assert r.json()["phase"] == "promoting"
    assert reason(user(stable)) == ("canary", "SPLIT", "cohort")  # exposure 100%
    web.service.releases.advance("shop-1", Tick(time.time() + 1e6))
    assert web.client.get("/v1/releases/shop-1", headers=web.as_("viewer")).json()["phase"] == (
        "promoted"
    )
    assert reason(user(stable)) == ("stable", "STATIC", "promoted")
    assert flag(web, "shop.api", user(stable), **auth).json()["variant"] == "v2"
    for coalmine_reason, openfeature in OPENFEATURE_REASONS.items():
        assert coalmine_reason in Reason
        assert openfeature in ("SPLIT", "TARGETING_MATCH", "STATIC", "DISABLED", "DEFAULT", "ERROR")


def test_rolled_back_then_a_new_release(sqlite_url: str, admin_env: str) -> None:
    with shop(sqlite_url) as (web, key):
        assert web.client.post(
            "/v1/releases/shop-1/rollback", headers=web.as_("deployer")
        ).is_success
        got = flag(web, "shop", user("user-7"), **{"X-API-Key": key}).json()
        assert (got["value"], got["reason"]) == ("stable", "DISABLED")
        assert got["metadata"]["reason"] == "rolled_back"
        web.service.releases.advance(
            "shop-1", Tick(time.time() + 1e6)
        )  # rolling_back -> rolled_back
        start_release(web, {"api": "v2"})
        got = flag(web, "shop.api", user("user-7"), **{"X-API-Key": key}).json()
        assert got["metadata"]["release_id"] == "shop-2"
