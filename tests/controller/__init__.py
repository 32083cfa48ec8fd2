"""Tests of the rollout controller: loop, hooks, event webhooks, leader election, crashes.

Shared helpers live here; fixtures in ``conftest.py``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from coalmine.controller.loop import Controller
from coalmine.controller.plane import ControlPlane
from coalmine.controller.schemas import (
    AppSpec,
    FunctionSpec,
    HookSpec,
    ReleaseCreate,
    ReleaseSettings,
)
from coalmine.core.machine import Hook
from coalmine.core.model import Phase, RouteMode, Targeting
from coalmine.core.ports import HookOutcome
from coalmine.core.records import HookConfig, ReleaseRecord
from coalmine.core.strategy import parse_strategy
from tests.helpers import T0 as T0  # re-exported, with the clock that starts there
from tests.helpers import FakeClock as FakeClock
from tests.helpers import free_port

APP = "shop"
ACTOR = "alice@example.com"


def shop_spec(webhooks: list[str] | None = None, app: str = APP) -> AppSpec:
    """Two functions running v1, each with a v2 candidate registered."""
    return AppSpec(
        app=app,
        functions={
            "cart": FunctionSpec(
                versions={"v1": "shop.cart:handler", "v2": "shop.cart:handler_v2"}, current="v1"
            ),
            "pay": FunctionSpec(
                versions={"v1": "shop.pay:handler", "v2": "shop.pay:handler_v2"}, current="v1"
            ),
        },
        release=ReleaseSettings(webhooks=webhooks or []),
    )


ANALYSIS_OFF = {"enabled": False}
"""a release's analysis turned off: for tests not about the judge"""


def start_release(
    svc: ControlPlane,
    strategy: str,
    hooks: dict[str, HookSpec] | None = None,
    *,
    app: str = APP,
    webhooks: list[str] | None = None,
) -> ReleaseRecord:
    """Create the app (if needed) and start a release of cart and pay v2 (not judged:
    these tests are about steps and hooks)."""
    svc.catalog.apply(shop_spec(webhooks, app), ACTOR)
    return svc.releases.start(
        app,
        ReleaseCreate.model_validate(
            {
                "candidate": {"cart": "v2", "pay": "v2"},
                "strategy": strategy,
                "hooks": hooks or {},
                "analysis": ANALYSIS_OFF,
            }
        ),
        ACTOR,
    )


class NoHooks:
    """A hook runner for releases without hooks: running one is a test failure."""

    def run(self, release: ReleaseRecord, hook: Hook, spec: HookConfig) -> HookOutcome:
        raise AssertionError(f"unexpected {hook} hook")


def tick_through_hooks(ctl: Controller, timeout: float = 10.0) -> int:
    """Tick, and tick again each time a hook the ticks started finishes (hooks run off the
    tick), until none runs; the transitions made in all."""
    made = ctl.tick()
    while len(ctl.hook_pool):
        assert ctl.wait_for_hooks(timeout), f"no hook finished within {timeout}s"
        made += ctl.tick()
    return made


def release_events(svc: ControlPlane, release_id: str) -> list[tuple[str, int | None]]:
    """(kind, exposure) of each event of a release, oldest first."""
    return [(e.kind, e.exposure) for e in svc.audit.events(release_id=release_id, limit=1000)]


def closed_port() -> int:
    """A local port nothing listens on."""
    return free_port()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.02)


# -- a real HTTP server on 127.0.0.1 ------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Route:
    statuses: list[int]
    """answers in turn; the last one repeats"""
    delay: float = 0.0
    body: str = ""
    drip: float = 0.0
    """> 0: the body is sent one byte every ``drip`` seconds (a server that never quite
    stops answering), until the server shuts down"""


class HttpServer:
    """Records every POST; answers each path as told by `route` (200 by default).

    ``port``: listen there (a receiver that comes back where it was), else on a free one."""

    def __init__(self, port: int = 0) -> None:
        self.received: list[Received] = []
        self.routes: dict[str, Route] = {}
        self.gate = threading.Event()
        """cleared: requests to a route with ``delay < 0`` wait until it is set"""
        self.gate.set()
        self.closing = threading.Event()
        """set when the server shuts down: a dripping answer stops"""
        self._cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                path = self.path.split("?", 1)[0]
                route = outer.routes.get(path, Route([200]))
                with outer._cond:
                    outer.received.append(
                        Received(
                            path,
                            {k.lower(): v for k, v in self.headers.items()},
                            json.loads(raw) if raw else None,
                        )
                    )
                    seen = sum(1 for r in outer.received if r.path == path)
                    outer._cond.notify_all()
                status = route.statuses[min(seen, len(route.statuses)) - 1]
                if route.delay > 0:
                    time.sleep(route.delay)
                outer.gate.wait(10)
                try:
                    data = route.body.encode()
                    self.send_response(status)
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    if route.drip > 0:
                        for byte in data:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            if outer.closing.wait(route.drip):
                                return
                    else:
                        self.wfile.write(data)
                except OSError:  # the client gave up (timeout): nothing to answer
                    pass

            do_GET = do_POST  # noqa: N815 (a Prometheus query; recorded alike)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(
        self, path: str, *statuses: int, delay: float = 0.0, body: str = "", drip: float = 0.0
    ) -> str:
        self.routes[path] = Route(list(statuses) or [200], delay, body, drip)
        return self.url(path)

    def at(self, path: str) -> list[Received]:
        with self._cond:
            return [r for r in self.received if r.path == path]

    def wait(self, path: str, count: int, timeout: float = 10.0) -> list[Received]:
        """The first ``count`` requests to ``path``, waiting for them to arrive."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: sum(1 for r in self.received if r.path == path) >= count, timeout
            )
        got = self.at(path)
        assert ok, f"expected {count} requests to {path} within {timeout}s, got {len(got)}"
        return got

    def __enter__(self) -> HttpServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.gate.set()
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


def hook_release(**hooks: HookConfig) -> ReleaseRecord:
    """A pending release of app shop (cart v1 -> v2) with ``hooks``: what a hook runner is given."""
    return ReleaseRecord(
        id="shop-1",
        app="shop",
        phase=Phase.PENDING,
        route_mode=RouteMode.USER,
        salt="0123456789abcdef",
        strategy=parse_strategy("AllAtOnce"),
        baseline={"cart": "v1"},
        candidate={"cart": "v2"},
        targeting=Targeting(),
        hooks={Hook(k): v for k, v in hooks.items()},
        analysis={},
        exposure=0,
        step=-1,
        next_action_at=0.0,
        paused_remaining=None,
        reason=None,
        created_by=ACTOR,
        created_at=0.0,
        updated_at=0.0,
        finished_at=None,
        started_at=None,
        row_version=1,
    )
