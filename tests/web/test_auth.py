"""Authentication and roles: 401 without a valid token, 403 below the role, sdk key scoping."""

from __future__ import annotations

import pytest

from tests.web.conftest import Web, bearer

# (method, path, json body, role needed, the action named in the 403)
ROUTES = [
    ("GET", "/v1/apps", None, "viewer", "read apps"),
    ("GET", "/v1/apps/shop", None, "viewer", "read apps"),
    ("POST", "/v1/apps", {"name": "blog"}, "deployer", "create apps"),
    ("POST", "/v1/apps/shop/functions", {"name": "mailer"}, "deployer", "add functions"),
    (
        "POST",
        "/v1/apps/shop/functions/api/versions",
        {"name": "v3", "target": "shop.api_v3:handler"},
        "deployer",
        "register versions",
    ),
    ("GET", "/v1/apps/shop/releases", None, "viewer", "read releases"),
    ("POST", "/v1/apps/shop/releases", {"candidate": {"api": "v2"}}, "deployer", "start releases"),
    ("GET", "/v1/events", None, "viewer", "read events"),
    ("GET", "/v1/tokens", None, "admin", "manage tokens"),
    ("POST", "/v1/tokens", {"name": "x", "role": "viewer"}, "admin", "manage tokens"),
]
RANK = {"sdk": 0, "viewer": 1, "deployer": 2, "admin": 3}


def test_no_token_or_a_bad_one_is_401(sqlite_web: Web) -> None:
    c = sqlite_web.client
    r = c.get("/v1/apps")
    assert r.status_code == 401
    assert r.json() == {"detail": "missing bearer token: pass --token or set COALMINE_TOKEN"}
    assert r.headers["www-authenticate"] == "Bearer"
    assert c.get("/v1/apps", headers={"Authorization": "Basic dXNlcjpwYXNz"}).status_code == 401
    r = c.get("/v1/apps", headers=bearer("cm_not-a-real-token-at-all"))
    assert r.status_code == 401
    assert r.json() == {"detail": "invalid or revoked token"}
    assert c.get("/healthz").json() == {"status": "ok"}


def test_each_role_gets_exactly_its_routes(sqlite_web: Web) -> None:
    web = sqlite_web
    web.apply()
    web.secrets["sdk"] = web.sdk_key("shop")
    before = web.fingerprint()
    for method, path, body, needed, action in ROUTES:
        for role in ("sdk", "viewer", "deployer"):
            if RANK[role] >= RANK[needed]:
                continue
            r = web.client.request(method, path, json=body, headers=web.as_(role))
            assert r.status_code == 403, (method, path, role, r.text)
            assert r.json() == {"detail": f"role {role} cannot {action}; needs {needed}"}
    assert web.fingerprint() == before  # a refused request changes nothing

    allowed = {}
    for method, path, body, needed, _ in ROUTES:
        r = web.client.request(method, path, json=body, headers=web.as_(needed))
        allowed[method, path] = r.status_code
    assert allowed == {
        ("GET", "/v1/apps"): 200,
        ("GET", "/v1/apps/shop"): 200,
        ("POST", "/v1/apps"): 201,
        ("POST", "/v1/apps/shop/functions"): 201,
        ("POST", "/v1/apps/shop/functions/api/versions"): 201,
        ("GET", "/v1/apps/shop/releases"): 200,
        ("POST", "/v1/apps/shop/releases"): 201,
        ("GET", "/v1/events"): 200,
        ("GET", "/v1/tokens"): 200,
        ("POST", "/v1/tokens"): 201,
    }
    # admin includes deployer and viewer
    assert web.client.get("/v1/apps", headers=web.as_("admin")).status_code == 200
    r = web.client.post("/v1/apps", json={"name": "docs"}, headers=web.as_("admin"))
    assert r.status_code == 201
    assert r.json()["name"] == "docs"


def test_an_sdk_key_reads_only_its_own_apps_routing(web: Web) -> None:
    web.apply()
    web.apply("app: blog\nfunctions:\n  render:\n    versions: {v1: 'blog.r:h'}\n")
    shop_key = web.sdk_key("shop")
    c = web.client

    r = c.get("/v1/apps/shop/routing", headers=bearer(shop_key))
    assert r.status_code == 200
    assert r.json()["app"] == "shop"
    for path in ("/v1/apps/blog/routing", "/v1/apps/blog/routing/stream"):
        r = c.get(path, headers=bearer(shop_key))
        assert r.status_code == 403
        assert "reads only the routing of app 'shop', not 'blog'" in r.json()["detail"]
    r = c.get("/v1/apps/shop", headers=bearer(shop_key))
    assert r.status_code == 403
    assert r.json()["detail"] == "role sdk cannot read apps; needs viewer"
    r = c.post("/v1/releases/shop-1/rollback", headers=bearer(shop_key))
    assert r.status_code == 403
    # viewers read every app's routing
    assert c.get("/v1/apps/blog/routing", headers=web.as_("viewer")).status_code == 200


@pytest.mark.parametrize("role", ["viewer", "sdk"])
def test_operating_a_release_needs_deployer(sqlite_web: Web, role: str) -> None:
    web = sqlite_web
    web.apply()
    web.secrets["sdk"] = web.sdk_key("shop")
    rel = web.client.post(
        "/v1/apps/shop/releases", json={"candidate": {"api": "v2"}}, headers=web.as_("deployer")
    ).json()
    for op in ("promote", "rollback", "pause", "resume"):
        r = web.client.post(f"/v1/releases/{rel['id']}/{op}", headers=web.as_(role))
        assert r.status_code == 403
        assert r.json()["detail"] == f"role {role} cannot operate releases; needs deployer"
    assert web.service.releases.get(rel["id"]).phase == "pending"
