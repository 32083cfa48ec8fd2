"""Fixtures of the web tests: an app over each store, role tokens, a real uvicorn server."""

from __future__ import annotations

import json
import queue
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from coalmine.controller.plane import ControlPlane
from coalmine.controller.schemas import EventRead, ReleaseRead
from coalmine.controller.tokens import TokenService
from coalmine.web import create_app
from tests.servers import start_uvicorn

with warnings.catch_warnings():
    # starlette asks for the httpx2 package, which the lock does not hold; httpx works.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient as TestClient

ADMIN_SECRET = "cm_test-admin-secret-0123456789abcdef"

APP_DOC = """\
app: shop
functions:
  api:
    versions:
      v1: shop.api:handler
      v2: shop.api_v2:handler
    current: v1
  worker:
    versions:
      v1: shop.worker:handler
    current: v1
release:
  strategy: Linear10PercentEvery1Minute
"""


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@dataclass
class Web:
    """A running app (lifespan entered) with a client and a token per role."""

    app: FastAPI
    client: TestClient
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def service(self) -> ControlPlane:
        service: ControlPlane = self.app.state.plane
        return service

    @property
    def tokens(self) -> TokenService:
        tokens: TokenService = self.app.state.tokens
        return tokens

    def as_(self, role: str) -> dict[str, str]:
        return bearer(self.secrets[role])

    def sdk_key(self, app: str) -> str:
        return self.tokens.create(f"sdk-{app}", "sdk", app).token

    def browser_key(self, app: str) -> str:
        return self.tokens.create(f"web-{app}", "browser", app).token

    def apply(self, doc: str = APP_DOC, **params: Any) -> Any:
        r = self.client.post(
            "/v1/apply",
            content=doc,
            params=params,
            headers={**self.as_("deployer"), "Content-Type": "application/yaml"},
        )
        assert r.status_code == 200, r.text
        return r.json()

    def start_release(self) -> str:
        """Apply the shop app and start a release of api v2 (pending: no tick yet); its id."""
        self.apply()
        r = self.client.post(
            "/v1/apps/shop/releases",
            json={"candidate": {"api": "v2"}},
            headers=self.as_("deployer"),
        )
        assert r.status_code == 201, r.text
        rid: str = r.json()["id"]
        return rid

    def fingerprint(self) -> tuple[Any, ...]:
        """Everything the store holds that a request could change."""
        s = self.service
        return (
            [a.model_dump() for a in s.catalog.list_apps()],
            [ReleaseRead.of(r).model_dump() for r in s.releases.recent(limit=1000)],
            [EventRead.of(e).model_dump() for e in s.audit.events(limit=100_000)],
            [t.model_dump() for t in self.tokens.list()],
        )


@contextmanager
def running(url: str, **kwargs: Any) -> Iterator[Web]:
    app = create_app(database_url=url, **kwargs)
    with TestClient(app) as client:
        web = Web(app, client, {"admin": ADMIN_SECRET})
        for role in ("deployer", "viewer"):
            web.secrets[role] = web.tokens.create(f"test-{role}", role).token
        yield web


@pytest.fixture
def admin_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COALMINE_BOOTSTRAP_TOKEN", ADMIN_SECRET)
    return ADMIN_SECRET


@pytest.fixture
def web(database_url: str, admin_env: str) -> Iterator[Web]:
    """The API over SQLite and over PostgreSQL."""
    with running(database_url) as w:
        yield w


@pytest.fixture
def sqlite_web(sqlite_url: str, admin_env: str) -> Iterator[Web]:
    """The API over SQLite only (for checks that do not depend on the store)."""
    with running(sqlite_url) as w:
        yield w


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` under a real uvicorn server on 127.0.0.1; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server, thread = start_uvicorn(app, sock, grace=5)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def read_events(response: httpx.Response, out: queue.Queue[tuple[float, str, Any] | None]) -> None:
    """Every event (and comment) of an SSE stream with its arrival time, as ``(time, kind,
    data)``; ``(time, "end", None)`` once the stream ends (run it on a thread)."""
    try:
        event, data = "", ""
        for line in response.iter_lines():
            if line.startswith(":"):
                out.put((time.monotonic(), "comment", line))
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
            elif not line and event:
                out.put((time.monotonic(), event, json.loads(data)))
                event, data = "", ""
    except (httpx.HTTPError, RuntimeError):  # RuntimeError: the client closed mid-read
        pass
    finally:
        out.put((time.monotonic(), "end", None))
