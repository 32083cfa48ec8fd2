"""The flusher: batches to /v1/metrics, retries what failed, drops what was refused, never raises.

Against a stand-in transport for the answers, and against the real control
plane (uvicorn in a thread) that goes down and comes back.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from coalmine.core.errors import InvalidInput
from coalmine.core.histogram import VersionMetrics
from coalmine.core.model import Channel
from coalmine.metrics import Flusher, Recorder
from tests.helpers import T0, FakeClock
from tests.sdk import ControlPlane, wait_until


class Plane:
    """A stand-in for ``POST /v1/metrics``: answers with ``status`` (or raises) and keeps bodies."""

    def __init__(self) -> None:
        self.status: int | Callable[[int], int] = 200
        self.down = False
        self.bodies: list[dict[str, Any]] = []
        self.requests: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        status = self.status(len(self.requests)) if callable(self.status) else self.status
        if status == 200:
            self.bodies.append(json.loads(request.content))
            return httpx.Response(200, json={"merged": len(self.bodies[-1]["windows"])})
        return httpx.Response(status, json={"detail": f"no ({status})"})

    def http(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle))

    def received(self) -> dict[tuple[str, str, str, str], tuple[int, int]]:
        """(app, function, version, channel) -> (requests, errors) over every accepted body."""
        out: dict[tuple[str, str, str, str], tuple[int, int]] = {}
        for body in self.bodies:
            for w in body["windows"]:
                key = (body["app"], w["function"], w["version"], w["channel"])
                req, err = out.get(key, (0, 0))
                out[key] = (req + w["requests"], err + w["errors"])
        return out


def fill(r: Recorder, n: int, app: str = "shop") -> None:
    for i in range(n):
        r.record(app, f"fn-{i}", "v1", "canary", 10.0 + i, error=i == 0)


def test_a_flush_posts_the_windows_as_a_batch_with_the_sdk_key() -> None:
    plane, r = Plane(), Recorder(clock=FakeClock())
    fill(r, 5)
    with plane.http() as http:
        f = Flusher(r, "http://plane/", "cmsdk_key", "shop", http=http, start=False, max_batch=2)
        assert f.flush()
        assert f.flush()  # nothing left: no request
    assert len(plane.requests) == 3  # 2 + 2 + 1 windows
    request = plane.requests[0]
    assert str(request.url) == "http://plane/v1/metrics"
    assert request.headers["authorization"] == "Bearer cmsdk_key"
    body = plane.bodies[0]
    assert body["app"] == "shop"
    assert body["window"] == 10.0
    window = body["windows"][0]
    assert window["start"] == T0
    assert window["channel"] == "canary"
    assert window["histogram"]["count"] == 1
    assert plane.received() == {
        ("shop", f"fn-{i}", "v1", "canary"): (1, int(i == 0)) for i in range(5)
    }
    stats = f.stats
    assert (stats.sent, stats.batches, stats.failed, stats.rejected) == (5, 3, 0, 0)
    assert stats.last_error is None


def test_failures_keep_the_windows_and_the_retry_sends_them_merged() -> None:
    plane, clock = Plane(), FakeClock()
    r = Recorder(clock=clock)
    r.record("shop", "api", "v2", "canary", 100.0)
    with plane.http() as http:
        f = Flusher(r, "http://plane", "k", "shop", http=http, start=False)
        plane.down = True
        assert not f.flush()
        r.record("shop", "api", "v2", "canary", 200.0, error=True)  # same window, meanwhile
        plane.down, plane.status = False, 503
        assert not f.flush()
        assert "HTTP 503" in (f.stats.last_error or "")
        plane.status = 429
        assert not f.flush()
        plane.status = 200
        assert f.flush()
    assert f.stats.failed == 3
    assert f.stats.last_error is None
    assert len(plane.bodies) == 1
    [window] = plane.bodies[0]["windows"]
    assert (window["requests"], window["errors"], window["histogram"]["count"]) == (2, 1, 2)


def test_a_refused_batch_is_dropped_and_counted_not_retried() -> None:
    plane, r = Plane(), Recorder(clock=FakeClock())
    fill(r, 3)
    plane.status = 403
    with plane.http() as http:
        f = Flusher(r, "http://plane", "k", "shop", http=http, start=False)
        assert f.flush()  # nothing to retry
        assert f.flush()
    assert len(plane.requests) == 1
    assert f.stats.rejected == 3
    assert f.stats.last_error == "HTTP 403: no (403)"
    assert r.stats.pending == 0


def test_a_failure_midway_keeps_only_the_batches_not_yet_sent() -> None:
    plane, r = Plane(), Recorder(clock=FakeClock())
    fill(r, 5)
    plane.status = lambda n: 200 if n == 1 else 500
    with plane.http() as http:
        f = Flusher(r, "http://plane", "k", "shop", http=http, start=False, max_batch=2)
        assert not f.flush()
        assert r.stats.pending == 3
        plane.status = 200
        assert f.flush()
    assert f.stats.sent == 5
    assert len(plane.received()) == 5


def test_without_an_app_every_app_is_sent_in_its_own_batch() -> None:
    plane, r = Plane(), Recorder(clock=FakeClock())
    fill(r, 2, "shop")
    fill(r, 1, "bank")
    with plane.http() as http:
        Flusher(r, "http://plane", "k", None, http=http, start=False).flush()
        assert [b["app"] for b in plane.bodies] == ["bank", "shop"]
        fill(r, 1, "bank")
        only_shop = Flusher(r, "http://plane", "k", "shop", http=http, start=False)
        assert only_shop.flush()
    assert r.stats.pending == 1  # bank's window waits for a flusher of bank


def test_the_thread_flushes_every_interval_and_close_flushes_the_rest() -> None:
    plane, r = Plane(), Recorder()
    http = plane.http()
    f = Flusher(r, "http://plane", "k", "shop", interval=0.02, http=http)
    fill(r, 1)
    wait_until(lambda: f.stats.sent == 1, what="a background flush")
    fill(r, 2)
    f.close()
    f.close()  # idempotent
    assert f.stats.sent == 3
    assert not http.is_closed  # a client passed in belongs to the caller
    http.close()


def test_the_flusher_never_raises_into_the_request_path() -> None:
    def explode(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a broken transport")

    r = Recorder()
    with httpx.Client(transport=httpx.MockTransport(explode)) as http:
        f = Flusher(r, "http://plane", "k", "shop", http=http, start=False)
        fill(r, 1)
        assert not f.flush()
        assert f.stats.last_error == "RuntimeError: a broken transport"
        assert r.stats.pending == 1
        # recording goes on while a flush is failing in another thread
        t = threading.Thread(target=f.flush)
        t.start()
        fill(r, 10)
        t.join()
    assert r.stats.pending == 10


def test_bad_settings_are_refused() -> None:
    r = Recorder()
    with pytest.raises(InvalidInput, match="control plane URL"):
        Flusher(r, "plane:8700", "k", start=False)
    with pytest.raises(InvalidInput, match="interval"):
        Flusher(r, "http://plane", "k", interval=0, start=False)
    with pytest.raises(InvalidInput, match="app name"):
        Flusher(r, "http://plane", "k", "Not An App", start=False)


def test_windows_survive_a_control_plane_outage_and_arrive_exactly(sqlite_url: str) -> None:
    """Send, lose the control plane, keep recording, bring it back: the store adds up."""
    plane = ControlPlane(sqlite_url)
    plane.start()
    closing: list[Flusher] = []
    try:
        plane.seed()
        key = plane.sdk_key()
        clock = FakeClock(T0 + 1)
        r = Recorder(clock=clock)
        f = Flusher(r, plane.url, key, "shop", start=False, timeout=2.0)
        closing.append(f)
        r.record("shop", "api", "v1", "stable", 12.0)
        r.record("shop", "api", "v2", "canary", 250.0, error=True)
        assert f.flush()
        assert f.stats.sent == 2

        plane.stop()
        r.record("shop", "api", "v2", "canary", 300.0)  # the window already sent
        clock.now = T0 + 11
        r.record("shop", "api", "v2", "canary", 400.0, error=True)  # a new window
        assert not f.flush()
        clock.now = T0 + 21
        r.record("shop", "api", "v1", "stable", 13.0)
        assert not f.flush()
        assert f.stats.failed == 2
        assert r.stats.pending == 3

        plane.start()  # same port, same store
        assert f.flush()
        assert r.stats.pending == 0
        assert f.stats.dropped == 0
        for total in r.totals():
            stored = plane.service.metrics.metrics_for(*total.key, since=0)
            assert stored.to_dict() == total.to_dict()
        canary = plane.service.metrics.metrics_for(
            "shop", "api", "v2", "canary", since=T0, until=T0 + 10
        )
        assert (canary.requests, canary.errors) == (2, 1)
        assert isinstance(canary, VersionMetrics)
        assert canary.channel is Channel.CANARY
    finally:
        for f in closing:
            f.close()
        plane.stop()
