"""Who may call what: the key-kind x endpoint table of docs/api.md, called row by row.

The table in docs/api.md is the one policy. This test reads it, calls a
representative request of every row with no token and with every kind of
token (over a real uvicorn server, so the streams answer as they do in
production) and checks each cell: "yes" is let through, "no" is a 401 without
a token and a 403 with one, "own app" is let through for the key's own app
and a 403 for a key of another app. A row the test has no request for, or a
request the table does not list, fails the test: the two cannot drift apart.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coalmine.metrics import batch
from coalmine.web import create_app
from tests.web.conftest import ADMIN_SECRET, APP_DOC, Web, bearer, serve
from tests.web.test_metrics import window

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
KINDS = ("no token", "browser", "sdk", "scraper", "viewer", "deployer", "admin")
Request = tuple[str, str, dict[str, Any]]
"""method, path (with query), httpx keyword arguments"""


def _metrics_body() -> dict[str, Any]:
    now = time.time()
    return batch("shop", [window(now - now % 10)], 10.0)


# The first cell of each row of the table -> representative requests of that row.
REQUESTS: dict[str, list[Request]] = {
    "`GET /healthz`": [("GET", "/healthz", {})],
    "`GET /v1/discovery`, `GET /v1/discovery/stream` (one user)": [
        ("GET", "/v1/discovery?app=shop&user=alice", {}),
        ("STREAM", "/v1/discovery/stream?app=shop&user=alice", {}),
    ],
    "`POST /ofrep/v1/evaluate/flags[/{key}]`": [
        ("POST", "/ofrep/v1/evaluate/flags", {"json": {"context": {"targetingKey": "alice"}}}),
        ("POST", "/ofrep/v1/evaluate/flags/shop", {"json": {"context": {"targetingKey": "a"}}}),
    ],
    "`POST /v1/discovery/batch` (many users)": [
        ("POST", "/v1/discovery/batch", {"json": {"app": "shop", "users": ["alice", "bob"]}}),
    ],
    "`GET /v1/apps/{app}/routing`, `GET /v1/apps/{app}/routing/stream`": [
        ("GET", "/v1/apps/shop/routing", {}),
        ("STREAM", "/v1/apps/shop/routing/stream", {}),
    ],
    "`POST /v1/metrics`": [("POST", "/v1/metrics", {"json": "metrics"})],
    "`GET /metrics`": [("GET", "/metrics", {})],
    "`GET /openapi.json`, `GET /docs`": [("GET", "/openapi.json", {}), ("GET", "/docs", {})],
    "pages' static parts: `GET /ui`, `/ui/ui.js`, `/ui/ui.css`, `/docs/assets/{file}` (no data)": [
        ("GET", "/ui", {}),
        ("GET", "/ui/ui.js", {}),
        ("GET", "/ui/ui.css", {}),
        ("GET", "/docs/assets/swagger-ui-bundle.js", {}),
    ],
    "the dashboard's data: `GET /ui/fragments/...` (docs/ui.md)": [
        ("GET", "/ui/fragments/apps", {}),
    ],
    "reads: `GET /v1/apps...`, releases, events, alarms, analysis runs": [
        ("GET", "/v1/apps", {}),
        ("GET", "/v1/apps/shop/releases", {}),
        ("GET", "/v1/events", {}),
        ("GET", "/v1/apps/shop/alarms", {}),
    ],
    "writes: apply, apps, functions, versions, releases and their operations, alarms": [
        ("POST", "/v1/apps", {"json": {"name": "docs-{kind}"}}),
        ("POST", "/v1/alarms?app=shop", {"json": {"name": "probe", "state": "OK"}}),
    ],
    "`GET`, `POST /v1/tokens`, `DELETE /v1/tokens/{id}`": [("GET", "/v1/tokens", {})],
    "`GET /v1/signing-keys`": [("GET", "/v1/signing-keys", {})],
}


def policy() -> dict[str, dict[str, str]]:
    """The table under "Who may call what": first cell -> {kind: cell}."""
    text = API_DOC.read_text(encoding="utf-8")
    section = text.split("### Who may call what", 1)[1]
    lines = section.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert tuple(header[1:]) == KINDS, header
    table = {}
    for line in rows[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        table[cells[0]] = dict(zip(KINDS, cells[1:], strict=True))
    return table


def test_the_policy_table_and_this_test_name_the_same_rows() -> None:
    table = policy()
    assert set(table) == set(REQUESTS)
    for row, cells in table.items():
        assert set(cells.values()) <= {"yes", "no", "own app"}, row
        # only keys that belong to an app can be limited to it
        own = {k for k, v in cells.items() if v == "own app"}
        assert own <= {"browser", "sdk"}, row


@pytest.fixture
def server(sqlite_url: str, admin_env: str) -> Iterator[tuple[str, dict[str, str], dict[str, str]]]:
    """A served control plane with apps shop and blog; a secret per kind, and of blog."""
    app = create_app(database_url=sqlite_url, heartbeat=0.2)
    with serve(app) as base:
        tokens = app.state.tokens
        with httpx.Client(base_url=base, headers=bearer(ADMIN_SECRET)) as admin:
            for doc in (APP_DOC, "app: blog\nfunctions:\n  render:\n    versions: {v1: 'b.r:h'}\n"):
                r = admin.post("/v1/apply", content=doc, headers={"Content-Type": "text/yaml"})
                assert r.status_code == 200, r.text
        secrets = {"admin": ADMIN_SECRET}
        for kind in ("viewer", "deployer", "scraper"):
            secrets[kind] = tokens.create(f"k-{kind}", kind).token
        other = {}
        for kind in ("browser", "sdk"):
            secrets[kind] = tokens.create(f"shop-{kind}", kind, "shop").token
            other[kind] = tokens.create(f"blog-{kind}", kind, "blog").token
        yield base, secrets, other


def _call(base: str, request: Request, secret: str | None, kind: str) -> httpx.Response:
    method, path, kwargs = request
    kwargs = dict(kwargs)
    if kwargs.get("json") == "metrics":
        kwargs["json"] = _metrics_body()
    elif isinstance(kwargs.get("json"), dict) and "name" in kwargs["json"]:
        kwargs["json"] = {**kwargs["json"], "name": kwargs["json"]["name"].format(kind=kind)}
    headers = bearer(secret) if secret is not None else {}
    with httpx.Client(base_url=base, timeout=10) as client:
        if method == "STREAM":
            with client.stream("GET", path, headers=headers) as response:
                return response
        return client.request(method, path, headers=headers, **kwargs)


def _allowed(status: int) -> bool:
    return status not in (401, 403)


def _other_apps_key(base: str, request: Request, secret: str, kind: str) -> str | None:
    """What is wrong when blog's key makes a request meant for shop (None: nothing)."""
    got = _call(base, request, secret, kind)
    if not request[1].startswith("/ofrep/"):
        return None if got.status_code == 403 else f"{got.status_code}"
    # OFREP names no app: the key's app is the one evaluated, never shop
    body = got.json()
    if got.status_code == 200:
        apps = {f["key"].split(".")[0] for f in body["flags"]}
        return None if apps == {"blog"} else got.text
    return None if body.get("errorCode") == "FLAG_NOT_FOUND" else got.text


def test_every_kind_of_token_gets_exactly_its_row_of_the_table(
    server: tuple[str, dict[str, str], dict[str, str]],
) -> None:
    base, secrets, other = server
    wrong: list[str] = []
    for row, cells in policy().items():
        for request in REQUESTS[row]:
            called = f"{request[0]} {request[1]}"
            for kind, cell in cells.items():
                secret = None if kind == "no token" else secrets[kind]
                status = _call(base, request, secret, re.sub(r"\W", "", kind)).status_code
                if cell == "no":
                    ok = status == (401 if secret is None else 403)
                else:
                    ok = _allowed(status)
                if not ok:
                    wrong.append(f"{called} as {kind}: {status} ({cell})")
                if cell == "own app":
                    problem = _other_apps_key(base, request, other[kind], kind)
                    if problem is not None:
                        wrong.append(f"{called} as blog's {kind}: {problem}")
    assert wrong == [], "\n".join(wrong)


def test_only_a_browser_key_may_be_sent_in_the_url(
    server: tuple[str, dict[str, str], dict[str, str]],
) -> None:
    base, secrets, _ = server
    with httpx.Client(base_url=base, timeout=10) as client:
        r = client.get(
            "/v1/discovery", params={"app": "shop", "user": "u", "key": secrets["browser"]}
        )
        assert r.status_code == 200, r.text
        r = client.get("/v1/discovery", params={"app": "shop", "user": "u", "key": secrets["sdk"]})
        assert r.status_code == 403
        detail = r.json()["detail"]
        # the message says what happened and what to do
        assert "sdk key is a server credential" in detail
        assert "--role browser --app shop" in detail
        assert "revoke" in detail
        r = client.get(
            "/v1/discovery", params={"app": "shop", "user": "u", "key": secrets["viewer"]}
        )
        assert r.status_code == 403


# -- the attacks of issue 13, one by one -------------------------------------------------------


def test_the_key_a_page_holds_cannot_write_the_metrics_the_judge_reads(sqlite_web: Web) -> None:
    """Invented canary errors (a rollback of a healthy release) or a flood of successes (a
    failing canary hidden) need the key that ships in pages to write metrics: it cannot."""
    web = sqlite_web
    web.apply()
    page_key = web.browser_key("shop")
    before = web.service.metrics.metrics_for("shop", "api", "v2", "canary", since=0)
    r = web.client.post("/v1/metrics", json=_metrics_body(), headers=bearer(page_key))
    assert r.status_code == 403
    assert r.json()["detail"] == (
        "role browser cannot send metrics; needs deployer or the sdk key of the app"
    )
    after = web.service.metrics.metrics_for("shop", "api", "v2", "canary", since=0)
    assert after.to_dict() == before.to_dict()
    # the server's key still writes
    r = web.client.post("/v1/metrics", json=_metrics_body(), headers=bearer(web.sdk_key("shop")))
    assert r.status_code == 200, r.text


def test_the_key_a_page_holds_reads_no_snapshot_only_its_users_answer(sqlite_web: Web) -> None:
    """The snapshot holds the salt, the testers' ids and every version's target: a page's
    key gets 403 there, and discovery answers it for one user without any of those."""
    web = sqlite_web
    web.apply()
    r = web.client.post(
        "/v1/apps/shop/releases",
        json={"candidate": {"api": "v2"}, "targeting": {"always_canary": ["tester-1"]}},
        headers=web.as_("deployer"),
    )
    assert r.status_code == 201, r.text
    page_key = web.browser_key("shop")
    for path in ("/v1/apps/shop/routing", "/v1/apps/shop/routing/stream"):
        r = web.client.get(path, headers=bearer(page_key))
        assert r.status_code == 403
        assert r.json()["detail"].startswith("a browser key cannot read the routing snapshot")
    r = web.client.get("/v1/discovery", params={"app": "shop", "user": "u", "key": page_key})
    assert r.status_code == 200
    salt = web.service.snapshots.snapshot("shop").to_dict()["release"]["salt"]
    assert salt not in r.text
    assert "tester-1" not in r.text
    assert "shop.api_v2:handler" not in r.text  # the other channel's target


def test_the_control_planes_metrics_need_a_scraper_or_viewer_token(sqlite_web: Web) -> None:
    web = sqlite_web
    web.apply()
    r = web.client.post("/v1/metrics", json=_metrics_body(), headers=bearer(web.sdk_key("shop")))
    assert r.status_code == 200
    r = web.client.get("/metrics")
    assert r.status_code == 401
    assert "shop" not in r.text
    r = web.client.get("/metrics", headers=bearer(web.browser_key("shop")))
    assert r.status_code == 403
    assert "needs a scraper token" in r.json()["detail"]
    scraper = bearer(web.tokens.create("prometheus", "scraper").token)
    r = web.client.get("/metrics", headers=scraper)
    assert r.status_code == 200
    assert 'coalmine_requests_total{app="shop"' in r.text
    # a scraper token reads /metrics and nothing else
    assert web.client.get("/v1/apps", headers=scraper).status_code == 403
    assert web.client.get("/v1/apps/shop/routing", headers=scraper).status_code == 403
