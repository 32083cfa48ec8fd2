"""The application factory: health, OpenAPI, the controller's lifecycle, error shapes."""

from __future__ import annotations

from typing import Any

from coalmine import __version__
from coalmine.controller.plane import ControlPlane
from coalmine.store.changes import ChangeFeed
from coalmine.store.db import open_store
from coalmine.web import create_app
from tests.web.conftest import ADMIN_SECRET, TestClient, Web, bearer


def test_health_and_openapi(sqlite_web: Web) -> None:
    c = sqlite_web.client
    assert c.get("/healthz").json() == {"status": "ok"}
    spec = c.get("/openapi.json", headers=sqlite_web.as_("viewer")).json()
    assert spec["info"]["title"] == "coalmine control plane"
    assert spec["info"]["version"] == __version__
    paths = spec["paths"]
    expected = {
        "/healthz": {"get"},
        "/v1/apps": {"get", "post"},
        "/v1/apps/{app}": {"get"},
        "/v1/apps/{app}/functions": {"post"},
        "/v1/apps/{app}/functions/{function}/versions": {"post"},
        "/v1/apps/{app}/functions/{function}/current": {"put"},
        "/v1/apply": {"post"},
        "/v1/apps/{app}/releases": {"get", "post"},
        "/v1/releases/{release_id}": {"get"},
        "/v1/releases/{release_id}/events": {"get"},
        "/v1/releases/{release_id}/promote": {"post"},
        "/v1/releases/{release_id}/rollback": {"post"},
        "/v1/releases/{release_id}/pause": {"post"},
        "/v1/releases/{release_id}/resume": {"post"},
        "/v1/events": {"get"},
        "/v1/apps/{app}/routing": {"get"},
        "/v1/apps/{app}/routing/stream": {"get"},
        "/v1/tokens": {"get", "post"},
        "/v1/tokens/{token_id}": {"delete"},
        "/v1/discovery": {"get"},
        "/v1/discovery/stream": {"get"},
        "/v1/discovery/batch": {"post"},
        "/ofrep/v1/evaluate/flags": {"post"},
        "/ofrep/v1/evaluate/flags/{key}": {"post"},
    }
    expected |= {"/v1/metrics": {"post"}, "/metrics": {"get"}}  # per-version metrics
    expected |= {  # alarms and analysis runs
        "/v1/alarms": {"post"},
        "/v1/apps/{app}/alarms": {"get"},
        "/v1/releases/{release_id}/analysis": {"get"},
        "/v1/releases/{release_id}/analysis/latest": {"get"},
    }
    expected |= {"/v1/signing-keys": {"get"}}  # the stored signing keys, for admins
    assert {p: set(ops) for p, ops in paths.items()} == expected
    apply_body = paths["/v1/apply"]["post"]["requestBody"]["content"]
    assert set(apply_body) == {"application/yaml", "application/json"}
    schemas = spec["components"]["schemas"]
    assert {"AppSpec", "FunctionSpec", "ReleaseSettings"} <= set(schemas)
    assert (
        "text/event-stream"
        in paths["/v1/apps/{app}/routing/stream"]["get"]["responses"]["200"]["content"]
    )
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


DOC_PAGES = ("/openapi.json", "/docs", "/redoc")


def test_the_api_docs_need_a_viewer_token(sqlite_web: Web) -> None:
    """The docs say every route but /healthz needs a token: the API's own docs too."""
    web = sqlite_web
    web.apply()
    browser = web.tokens.create("page", "browser", "shop").token
    for path in DOC_PAGES:
        r = web.client.get(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
        r = web.client.get(path, headers=bearer(browser))
        assert r.status_code == 403, path
        assert r.json()["detail"] == "role browser cannot read the API docs; needs viewer"
        r = web.client.get(path, headers=web.as_("viewer"))
        assert r.status_code == 200, path
    spec = web.client.get("/openapi.json", headers=web.as_("viewer")).json()
    assert "/openapi.json" not in spec["paths"]  # the page is not an operation of the API
    page = web.client.get("/docs", headers=web.as_("viewer")).text
    assert "/openapi.json" in page
    assert "swagger" in page.lower()


def test_public_docs_serve_the_docs_to_anyone(sqlite_url: str, admin_env: str) -> None:
    with TestClient(create_app(database_url=sqlite_url, public_docs=True)) as c:
        for path in DOC_PAGES:
            assert c.get(path).status_code == 200, path
        assert c.get("/openapi.json").json()["info"]["title"] == "coalmine control plane"
        assert c.get("/v1/apps").status_code == 401  # only the docs are public


def test_validation_errors_are_one_readable_line(sqlite_web: Web) -> None:
    c = sqlite_web.client
    r = c.post("/v1/tokens", json={"role": "wizard", "extra": 1}, headers=bearer(ADMIN_SECRET))
    assert r.status_code == 422
    body = r.json()
    assert body["detail"] == (
        "name: Field required; role: Input should be 'admin', 'deployer', 'viewer', 'sdk',"
        " 'browser' or 'scraper';"
        " extra: Extra inputs are not permitted"
    )
    assert [e["loc"] for e in body["errors"]] == [
        ["body", "name"],
        ["body", "role"],
        ["body", "extra"],
    ]
    r = c.get("/v1/events?after=-1", headers=bearer(ADMIN_SECRET))
    assert r.status_code == 422
    assert r.json()["detail"].startswith("query.after: ")
    r = c.post(
        "/v1/apps",
        content=b"{not json",
        headers={**bearer(ADMIN_SECRET), "Content-Type": "application/json"},
    )
    assert r.status_code == 422
    assert "JSON" in r.json()["detail"]


class FakeController:
    def __init__(self, service: ControlPlane, feed: ChangeFeed) -> None:
        self.service, self.feed = service, feed
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")


def test_controller_runs_only_when_asked(sqlite_url: str, admin_env: str) -> None:
    made: list[FakeController] = []

    def factory(service: ControlPlane, feed: ChangeFeed) -> Any:
        made.append(FakeController(service, feed))
        return made[-1]

    app = create_app(database_url=sqlite_url, start_controller=True, controller_factory=factory)
    with TestClient(app):
        assert len(made) == 1
        assert made[0].calls == ["start"]
        assert made[0].service is app.state.plane
        assert made[0].feed is app.state.feed
        assert app.state.controller is made[0]
    assert made[0].calls == ["start", "stop"]

    with TestClient(create_app(database_url=sqlite_url, controller_factory=factory)):
        assert len(made) == 1  # start_controller is False: the factory is not called


def test_a_passed_store_is_not_disposed(sqlite_url: str, admin_env: str) -> None:
    store = open_store(sqlite_url)
    try:
        with TestClient(create_app(store)) as c:
            assert c.get("/v1/apps", headers=bearer(ADMIN_SECRET)).json() == []
        with store.transaction() as s:  # still usable after the app shut down
            assert s.connection() is not None
    finally:
        store.dispose()


def test_a_second_client_on_a_running_app_shares_its_lifespan(sqlite_web: Web) -> None:
    """A second server or test client on one app neither restarts nor stops the first's caches."""
    key = sqlite_web.sdk_key(sqlite_web.apply()["app"])
    read = {"Authorization": f"Bearer {key}"}
    assert sqlite_web.client.get("/v1/apps/shop/routing", headers=read).status_code == 200
    with TestClient(sqlite_web.app) as second:  # its lifespan runs on another event loop
        assert second.get("/v1/apps/shop/routing", headers=read).status_code == 200
    # the first client's app still answers, and its lifespan ends cleanly at teardown
    r = sqlite_web.client.get("/v1/apps/shop/routing", headers=read)
    assert r.status_code == 200
    assert r.json()["app"] == "shop"
