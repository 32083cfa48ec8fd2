"""The routing snapshot endpoint: the snapshot's JSON, its ETag, and 304 when unchanged."""

from __future__ import annotations

from coalmine.core.snapshot import RoutingSnapshot
from coalmine.web.routes.routing import etag_matches
from tests.web.conftest import Web, bearer


def test_snapshot_etag_and_304(web: Web) -> None:
    web.apply()
    c, key = web.client, bearer(web.sdk_key("shop"))

    r = c.get("/v1/apps/shop/routing", headers=key)
    assert r.status_code == 200
    body = r.json()
    snapshot = web.service.snapshots.snapshot("shop")
    assert body == snapshot.to_dict()
    assert r.headers["etag"] == snapshot.etag == f'"shop-{body["revision"]}"'
    assert r.headers["cache-control"] == "no-cache"
    assert RoutingSnapshot.from_dict(body).state.versions == {"api": "v1", "worker": "v1"}
    etag = r.headers["etag"]

    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        r = c.get("/v1/apps/shop/routing", headers={**key, "If-None-Match": header})
        assert r.status_code == 304, header
        assert r.content == b""
        assert r.headers["etag"] == etag
    r = c.get("/v1/apps/shop/routing", headers={**key, "If-None-Match": '"shop-0"'})
    assert r.status_code == 200
    assert r.json() == body

    # a change the data plane must see moves the ETag
    r = c.post(
        "/v1/apps/shop/releases", json={"candidate": {"api": "v2"}}, headers=web.as_("deployer")
    )
    assert r.status_code == 201
    r = c.get("/v1/apps/shop/routing", headers={**key, "If-None-Match": etag})
    assert r.status_code == 200
    assert r.headers["etag"] != etag
    assert r.json()["revision"] > body["revision"]
    assert r.json()["release"]["id"] == "shop-1"
    assert r.json()["release"]["candidate"] == {"api": "v2", "worker": "v1"}


def test_etag_matching() -> None:
    assert etag_matches('"a-1"', '"a-1"')
    assert etag_matches('W/"a-1"', '"a-1"')
    assert etag_matches(' "b-2" , "a-1"', '"a-1"')
    assert etag_matches("*", '"a-1"')
    assert not etag_matches('"a-10"', '"a-1"')
    assert not etag_matches(None, '"a-1"')
    assert not etag_matches("", '"a-1"')
