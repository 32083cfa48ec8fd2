"""Tests of the in-process SDK, many against a real control plane.

Shared helpers live here (not fixtures): `ControlPlane` runs the real FastAPI
control plane under uvicorn in a thread on a fixed 127.0.0.1 port, and can be
stopped and started again on the same port and store, as a crashed and
restarted control plane would be.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from coalmine.controller.plane import ControlPlane as Plane
from coalmine.controller.schemas import AppSpec, ReleaseCreate
from coalmine.controller.tokens import TokenService
from coalmine.core.machine import Tick
from coalmine.core.model import Release
from coalmine.core.records import ReleaseRecord
from coalmine.core.routing import RoutingState
from coalmine.core.signing import Keyring
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.core.strategy import parse_strategy
from coalmine.web import create_app
from tests.helpers import free_port
from tests.servers import start_uvicorn

APP = "shop"
ACTOR = "sdk-tests"
KEYRING = Keyring.single("sdk-test-signing-secret-0123456789", "t1")
SHOP = {
    "app": APP,
    "functions": {
        "api": {
            "versions": {"v1": "shop.api:handler", "v2": "shop.api_v2:handler"},
            "current": "v1",
        },
        "worker": {"versions": {"v1": "shop.worker:handler"}, "current": "v1"},
    },
    "release": {"strategy": "30%:10m, 100%"},
}


class ControlPlane:
    """The real control plane on ``127.0.0.1:port`` over ``database_url``; restartable."""

    def __init__(self, database_url: str, *, port: int | None = None, heartbeat: float = 15.0):
        self.database_url = database_url
        self.port = port or free_port()
        self.heartbeat = heartbeat
        self.app: FastAPI | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def service(self) -> Plane:
        assert self.app is not None
        service: Plane = self.app.state.plane
        return service

    @property
    def tokens(self) -> TokenService:
        assert self.app is not None
        tokens: TokenService = self.app.state.tokens
        return tokens

    def prepare(self) -> FastAPI:
        """Build the app (store opened and migrated) without serving it yet."""
        self.app = create_app(database_url=self.database_url, heartbeat=self.heartbeat)
        if not self.tokens.has_admin():  # so that start-up prints no generated token
            self.tokens.create("sdk-tests-admin", "admin")
        return self.app

    def start(self) -> float:
        """Serve (building the app unless `prepare` did); return time.monotonic() once up."""
        app = self.app if self.app is not None and self._server is None else self.prepare()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        server, thread = start_uvicorn(app, sock)
        self._server, self._thread, self._sock = server, thread, sock
        return time.monotonic()

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            assert self._thread is not None
            assert self._sock is not None
            self._thread.join(timeout=15)
            assert not self._thread.is_alive(), "uvicorn did not stop"
            self._sock.close()
        self._server = self._thread = self._sock = None
        self.app = None

    @staticmethod
    @contextmanager
    def closed_url() -> Iterator[str]:
        """The URL of a port where nothing listens (held bound, not listening)."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            yield f"http://127.0.0.1:{s.getsockname()[1]}"

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # data ---------------------------------------------------------------------

    def seed(self, spec: dict[str, Any] | None = None) -> None:
        self.service.catalog.apply(AppSpec.model_validate(spec or SHOP), ACTOR)

    def start_release(self, app: str = APP, **changes: str) -> ReleaseRecord:
        """A release of ``changes`` (api -> v2 by default), moved to its first step (30%)."""
        rel = self.service.releases.start(
            app, ReleaseCreate(candidate=changes or {"api": "v2"}), ACTOR
        )
        self.service.releases.advance(rel.id, Tick(time.time()))
        return self.service.releases.get(rel.id)

    def sdk_key(self, app: str = APP) -> str:
        return self.tokens.create(f"sdk-{app}-{time.monotonic_ns()}", "sdk", app).token

    def snapshot(self, app: str = APP) -> RoutingSnapshot:
        return self.service.snapshots.snapshot(app)


@dataclass
class Changes:
    """Collects on_change calls; `wait_for` blocks until one matches (no sleeping)."""

    seen: list[tuple[float, str, RoutingSnapshot]] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, app: str, snapshot: RoutingSnapshot) -> None:
        with self._cond:
            self.seen.append((time.monotonic(), app, snapshot))
            self._cond.notify_all()

    def wait_for(
        self, want: Callable[[RoutingSnapshot], bool], timeout: float = 5.0
    ) -> tuple[float, RoutingSnapshot]:
        """(time.monotonic() of arrival, snapshot) of the first matching change."""
        with self._cond:
            found: list[tuple[float, RoutingSnapshot]] = []

            def match() -> bool:
                found[:] = [(at, s) for at, _, s in self.seen if want(s)][:1]
                return bool(found)

            assert self._cond.wait_for(match, timeout), "no matching snapshot arrived"
            return found[0]


def wait_until(check: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll a condition that has no event to wait on (status fields)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@contextmanager
def serving(database_url: str, **kwargs: Any) -> Iterator[ControlPlane]:
    plane = ControlPlane(database_url, **kwargs)
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


# an in-process stand-in for the control plane's routing endpoints ------------------


def make_snapshot(
    revision: int = 1,
    *,
    app: str = APP,
    phase: str = "running",
    exposure: int = 3000,
    release_id: str = "shop-1",
    salt: str = "0123456789abcdef",
) -> RoutingSnapshot:
    """shop: api v1 -> v2 at ``exposure`` (a release in ``phase``), worker v1."""
    release = Release(
        id=release_id,
        app=app,
        baseline={"api": "v1", "worker": "v1"},
        candidate={"api": "v2", "worker": "v1"},
        salt=salt,
        strategy=parse_strategy("30%:10m, 100%"),
        exposure=exposure,
        phase=phase,  # type: ignore[arg-type]
    )
    state = RoutingState(app, {"api": "v1", "worker": "v1"}, release)
    targets = {
        "api": {"v1": "shop.api:handler", "v2": "shop.api_v2:handler"},
        "worker": {"v1": "shop.worker:handler"},
    }
    return RoutingSnapshot(state, revision, targets)


class MockPlane:
    """Answers ``GET /v1/apps/{app}/routing`` (with ETag / 304) from ``snapshots``.

    ``answers`` (if set) is a queue of snapshots served one per poll, for
    tests of ordering; the stream answers 503, so a sync over it polls.
    """

    def __init__(self, *snapshots: RoutingSnapshot) -> None:
        self.snapshots = {s.app: s for s in snapshots}
        self.answers: list[RoutingSnapshot] = []
        self.requests: list[httpx.Request] = []
        self.served = threading.Event()
        """set when ``answers`` ran dry"""
        self.lock = threading.Lock()

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
            parts = request.url.path.strip("/").split("/")
            if request.headers.get("authorization") != "Bearer sdk-key":
                return httpx.Response(401, json={"detail": "invalid or revoked token"})
            if parts[-1] == "stream":
                return httpx.Response(503, json={"detail": "no streams here"})
            app = parts[2]
            if self.answers:
                snap = self.answers.pop(0)
                if not self.answers:
                    self.served.set()
            elif app in self.snapshots:
                snap = self.snapshots[app]
            else:
                return httpx.Response(404, json={"detail": f"no app named {app!r}"})
            if request.headers.get("if-none-match") == snap.etag:
                return httpx.Response(304, headers={"ETag": snap.etag})
            return httpx.Response(200, json=snap.to_dict(), headers={"ETag": snap.etag})

    def http(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle))


class HeaderRecorder:
    """A local HTTP server that records each request's ``baggage`` headers (None if absent)."""

    def __init__(self) -> None:
        received: list[list[str] | None] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                received.append(self.headers.get_all("baggage"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def last(self) -> list[str] | None:
        return self.received[-1]

    def __enter__(self) -> HeaderRecorder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
