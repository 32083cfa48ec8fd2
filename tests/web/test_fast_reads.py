"""FastReads answers exactly as FastAPI does: same status, headers and body, for good and bad requests.

Every request below is sent to two apps over one store: the server as built
(with `FastReads`) and the same server without it (FastAPI alone). The
answers must be identical; plain answers must come from the fast path (they
never reach FastAPI), refusals from FastAPI.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from coalmine.core.model import Channel
from coalmine.web import create_app
from coalmine.web.discovery import DiscoverySettings
from coalmine.web.fast_reads import FastReads
from tests.web.conftest import TestClient, Web, bearer
from tests.web.test_discovery import KEYS, find_user, shop


class Reached:
    """Counts the requests that get past FastReads (to FastAPI's routing)."""

    count = 0

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            Reached.count += 1
        await self.app(scope, receive, send)


@contextmanager
def fastapi_alone(url: str) -> Iterator[TestClient]:
    app = create_app(database_url=url, signing_keys=KEYS)
    app.user_middleware = [m for m in app.user_middleware if m.cls is not FastReads]
    with TestClient(app) as client:
        yield client


Request = tuple[str, str, dict[str, Any], dict[str, str], bytes | None, bool]
"""method, path, query, headers, body, and whether the fast path answers it"""


def requests(web: Web, key: str) -> list[Request]:
    sdk, viewer = web.sdk_key("shop"), web.secrets["viewer"]
    blog_key = web.browser_key("blog")
    canary, stable = find_user(web, Channel.CANARY), find_user(web, Channel.STABLE)
    one = {"app": "shop", "user": canary}
    first = web.client.get("/v1/discovery", params={**one, "key": key})
    etag, context = first.headers["etag"], first.json()["context"]
    routing_etag = web.client.get("/v1/apps/shop/routing", headers=bearer(sdk)).headers["etag"]
    flags = web.client.post(
        "/ofrep/v1/evaluate/flags", json={"context": {"targetingKey": canary}}, headers=bearer(key)
    )
    body = b'{"context": {"targetingKey": "%s"}}' % canary.encode()
    return [
        # discovery: answered by the fast path
        ("GET", "/v1/discovery", {**one, "key": key}, {}, None, True),
        ("GET", "/v1/discovery", {"app": "shop", "user": stable, "key": key}, {}, None, True),
        ("GET", "/v1/discovery", {**one, "key": key}, {"If-None-Match": etag}, None, True),
        ("GET", "/v1/discovery", {**one, "key": key}, {"If-None-Match": '"x"'}, None, True),
        ("GET", "/v1/discovery", {**one, "context": context}, bearer(key), None, True),
        ("GET", "/v1/discovery", {**one, "override": "junk"}, bearer(sdk), None, True),
        ("GET", "/v1/discovery", one, bearer(viewer), None, True),
        ("GET", "/v1/discovery", {**one, "app": "nope", "key": key}, bearer(viewer), None, False),
        ("GET", "/v1/discovery", {**one, "key": f"{blog_key}"}, bearer(key), None, True),
        # ...refused: FastAPI answers
        ("GET", "/v1/discovery", one, {}, None, False),
        ("GET", "/v1/discovery", {**one, "key": "cmpub_nope-nope-nope-nope"}, {}, None, False),
        ("GET", "/v1/discovery", {**one, "key": blog_key}, {}, None, False),
        ("GET", "/v1/discovery", {**one, "key": sdk}, {}, None, False),
        ("GET", "/v1/discovery", {"app": "shop", "key": key}, {}, None, False),
        ("GET", "/v1/discovery", {"user": "u", "key": key}, {}, None, False),
        ("GET", "/v1/discovery", {"app": "nope", "user": "u"}, bearer(viewer), None, False),
        ("GET", "/v1/discovery", one, {"Authorization": f"Basic {key}"}, None, False),
        ("GET", "/v1/discovery/", {**one, "key": key}, {}, None, False),
        ("HEAD", "/v1/discovery", {**one, "key": key}, {}, None, False),
        # a query parameter the endpoint does not take: FastAPI's 422 names it
        ("GET", "/v1/discovery", {**one, "key": key, "usr": "x"}, {}, None, False),
        # routing
        ("GET", "/v1/apps/shop/routing", {}, bearer(sdk), None, True),
        (
            "GET",
            "/v1/apps/shop/routing",
            {},
            {**bearer(sdk), "If-None-Match": routing_etag},
            None,
            True,
        ),
        ("GET", "/v1/apps/shop/routing", {}, {**bearer(viewer), "If-None-Match": "*"}, None, True),
        ("GET", "/v1/apps/shop/routing", {}, bearer(key), None, False),
        ("GET", "/v1/apps/shop/routing", {}, {}, None, False),
        ("GET", "/v1/apps/blog/routing", {}, bearer(sdk), None, False),
        ("GET", "/v1/apps/nope/routing", {}, bearer(viewer), None, False),
        ("GET", "/v1/apps/shop/routing/", {}, bearer(sdk), None, False),
        ("GET", "/v1/apps/a/b/routing", {}, bearer(sdk), None, False),
        ("GET", "/v1/apps//routing", {}, bearer(sdk), None, False),
        ("GET", "/v1/apps/shop/routing", {"etag": "1"}, bearer(sdk), None, False),
        # OFREP: its endpoints answer errors themselves, in OFREP's shapes
        ("POST", "/ofrep/v1/evaluate/flags", {}, bearer(key), body, True),
        ("POST", "/ofrep/v1/evaluate/flags", {}, {"X-API-Key": sdk}, body, True),
        (
            "POST",
            "/ofrep/v1/evaluate/flags",
            {},
            {**bearer(key), "If-None-Match": flags.headers["etag"]},
            body,
            True,
        ),
        ("POST", "/ofrep/v1/evaluate/flags", {}, bearer(key), b"{not json", True),
        ("POST", "/ofrep/v1/evaluate/flags", {}, bearer(key), b'{"context": {}}', True),
        ("POST", "/ofrep/v1/evaluate/flags", {}, bearer(viewer), body, True),
        ("POST", "/ofrep/v1/evaluate/flags", {}, {}, body, True),
        ("POST", "/ofrep/v1/evaluate/flags/shop", {}, bearer(key), body, True),
        ("POST", "/ofrep/v1/evaluate/flags/shop.api", {}, bearer(key), body, True),
        ("POST", "/ofrep/v1/evaluate/flags/nope", {}, bearer(key), body, True),
        ("POST", "/ofrep/v1/evaluate/flags/shop.api", {}, bearer(key), None, True),
        ("POST", "/ofrep/v1/evaluate/flags/", {}, bearer(key), body, False),
        ("POST", "/ofrep/v1/evaluate/flags/a/b", {}, bearer(key), body, False),
        ("POST", "/ofrep/v1/evaluate/flagsx", {}, bearer(key), body, False),
        ("OPTIONS", "/ofrep/v1/evaluate/flags", {}, {}, None, False),
        ("POST", "/ofrep/v1/evaluate/flags", {"x": "1"}, bearer(key), body, False),
    ]


def _answer(client: TestClient, request: Request) -> tuple[int, list[tuple[str, str]], bytes]:
    method, path, query, headers, body, _ = request
    r = client.request(method, path, params=query, headers=headers, content=body)
    return r.status_code, sorted(r.headers.multi_items()), r.content


def test_same_answers_as_fastapi(sqlite_url: str, admin_env: str) -> None:
    with shop(sqlite_url) as (web, key):
        assert web.client.post("/v1/apps", json={"name": "blog"}, headers=web.as_("deployer"))
        web.app.user_middleware.append(Middleware(Reached))  # inside FastReads
        web.app.middleware_stack = web.app.build_middleware_stack()
        cases = requests(web, key)
        with fastapi_alone(sqlite_url) as plain:
            for case in cases:
                for _ in range(3):  # a signed context's window may roll over between the two
                    window = DiscoverySettings().window(time.time())
                    before = Reached.count
                    fast = _answer(web.client, case)
                    reached = Reached.count - before
                    slow = _answer(plain, case)
                    if DiscoverySettings().window(time.time()) == window:
                        break
                assert fast == slow, case
                assert reached == (0 if case[-1] else 1), (case, fast[0])


@pytest.mark.parametrize("path", ["/v1/discovery", "/v1/apps/shop/routing"])
def test_a_root_path_is_honoured(sqlite_url: str, admin_env: str, path: str) -> None:
    """Behind a proxy that strips a prefix (``--root-path``), the fast path still answers."""
    with shop(sqlite_url) as (web, key):
        params = {"app": "shop", "user": "u", "key": key} if "discovery" in path else {}
        headers = {} if "discovery" in path else bearer(web.sdk_key("shop"))
        expected = web.client.get(path, params=params, headers=headers)
        web.app.user_middleware.append(Middleware(Reached))
        web.app.middleware_stack = web.app.build_middleware_stack()
        before = Reached.count
        prefixed = TestClient(web.app, root_path="/cm")  # no lifespan: web's is running
        r = prefixed.get("/cm" + path, params=params, headers=headers)
        assert (r.status_code, r.content) == (200, expected.content)
        assert Reached.count == before
