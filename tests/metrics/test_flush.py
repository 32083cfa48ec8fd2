"""The flusher: batches to /v1/metrics, retries what failed, drops what was refused, never raises.

Against a stand-in transport for the answers, and against the real control
plane (uvicorn in a thread) that goes down and comes back.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from coalmine.core.errors import InvalidInput
from coalmine.core.histogram import VersionMetrics
from coalmine.core.model import Channel
from coalmine.metrics import Flusher, MetricWindow, Recorder, window_start
from tests.helpers import T0, FakeClock
from tests.sdk import ControlPlane, wait_until


class Plane:
    """A stand-in for ``POST /v1/metrics``: answers with ``status`` (or raises) and keeps bodies."""

    def __init__(self) -> None:
        self.status: int | Callable[[int], int] = 200
        self.down = False
        self.bodies: list[dict[str, Any]] = []
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(time.monotonic())
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


@pytest.mark.parametrize("status", [400, 404, 409, 422])
def test_a_batch_refused_as_invalid_is_dropped_with_one_log_line_and_counted(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    plane, r = Plane(), Recorder(clock=FakeClock())
    fill(r, 3)
    plane.status = status
    with plane.http() as http, caplog.at_level(logging.DEBUG, "coalmine.metrics"):
        f = Flusher(r, "http://plane", "k", "shop", http=http, start=False)
        assert f.flush()  # nothing to retry
        assert f.flush()
    assert len(plane.requests) == 1
    assert f.stats.rejected == 3
    assert f.stats.last_error == f"HTTP {status}: no ({status})"
    assert r.stats.pending == 0
    [line] = [rec for rec in caplog.records if rec.name == "coalmine.metrics"]
    assert line.levelno == logging.WARNING
    assert line.getMessage() == (
        f"coalmine: the control plane refused 3 metric windows of app shop"
        f" (HTTP {status}: no ({status})); they are dropped"
    )
    with pytest.raises(InvalidInput, match="interval"):
        Flusher(r, "http://plane", "k", interval=0, start=False)
    with pytest.raises(InvalidInput, match="app name"):
        Flusher(r, "http://plane", "k", "Not An App", start=False)


@pytest.mark.parametrize("status", [401, 403, 408, 425, 429, 500, 502, 503])
def test_a_batch_refused_for_its_credential_or_a_passing_fault_is_kept(status: int) -> None:
    """A revoked or mistyped key is fixed by an operator, not by dropping the data: kept."""
    plane, r = Plane(), Recorder(clock=FakeClock())
    fill(r, 3)
    plane.status = status
    with plane.http() as http:
        f = Flusher(r, "http://plane", "k", "shop", http=http, start=False)
        assert not f.flush()
        assert r.stats.pending == 3
        plane.status = 200
        assert f.flush()
    assert (f.stats.rejected, f.stats.failed, f.stats.sent) == (0, 1, 3)


def test_retries_back_off_exponentially_up_to_a_bound_and_reset_on_success() -> None:
    plane, r = Plane(), Recorder(clock=FakeClock())
    with plane.http() as http:
        f = Flusher(
            r, "http://plane", "k", "shop", interval=5, max_backoff=60, http=http, start=False
        )
        assert f.delay == 5
        plane.down = True
        delays = []
        for _ in range(7):
            fill(r, 1)
            f.flush()
            delays.append(f.delay)
        assert delays == [10, 20, 40, 60, 60, 60, 60]
        plane.down = False
        assert f.flush()
        assert f.delay == 5
        with pytest.raises(InvalidInput, match="max_backoff"):
            Flusher(r, "http://plane", "k", interval=5, max_backoff=1, start=False)


def test_the_thread_waits_the_backoff_between_attempts() -> None:
    plane, r = Plane(), Recorder()
    plane.down = True
    http = plane.http()
    f = Flusher(r, "http://plane", "k", "shop", interval=0.01, max_backoff=0.08, http=http)
    fill(r, 1)
    wait_until(lambda: len(plane.times) >= 6, what="six failed attempts")
    f.close()
    http.close()
    gaps = [b - a for a, b in zip(plane.times, plane.times[1:6], strict=False)]
    # each wait is at least the backoff: 0.02, 0.04, 0.08 (the bound), 0.08
    for gap, wait in zip(gaps[:4], (0.02, 0.04, 0.08, 0.08), strict=True):
        assert gap >= wait * 0.95, gaps


def test_a_batch_too_large_for_the_control_plane_is_split_until_it_fits() -> None:
    plane, r = Plane(), Recorder(clock=FakeClock())
    fill(r, 5)
    plane.status = lambda n: (
        413 if len(json.loads(plane.requests[-1].content)["windows"]) > 2 else 200
    )
    with plane.http() as http:
        f = Flusher(r, "http://plane", "k", "shop", http=http, start=False)
        assert f.flush()
    assert sorted(len(b["windows"]) for b in plane.bodies) == [1, 2, 2]
    assert (f.stats.sent, f.stats.rejected) == (5, 0)
    assert len(plane.received()) == 5
    # one window alone too large: dropped and counted, the rest goes
    fill(r, 3)
    plane.status = lambda n: 413 if "fn-0" in plane.requests[-1].content.decode() else 200
    with plane.http() as http:
        f = Flusher(r, "http://plane", "k", "shop", http=http, start=False)
        assert f.flush()
    assert (f.stats.sent, f.stats.rejected) == (2, 1)


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
        t0 = window_start(time.time() - 60)  # windows near the control plane's clock
        clock = FakeClock(t0 + 1)
        r = Recorder(clock=clock)
        f = Flusher(r, plane.url, key, "shop", start=False, timeout=2.0)
        closing.append(f)
        r.record("shop", "api", "v1", "stable", 12.0)
        r.record("shop", "api", "v2", "canary", 250.0, error=True)
        assert f.flush()
        assert f.stats.sent == 2

        plane.stop()
        r.record("shop", "api", "v2", "canary", 300.0)  # the window already sent
        clock.now = t0 + 11
        r.record("shop", "api", "v2", "canary", 400.0, error=True)  # a new window
        assert not f.flush()
        clock.now = t0 + 21
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
            "shop", "api", "v2", "canary", since=t0, until=t0 + 10
        )
        assert (canary.requests, canary.errors) == (2, 1)
        assert isinstance(canary, VersionMetrics)
        assert canary.channel is Channel.CANARY
    finally:
        for f in closing:
            f.close()
        plane.stop()


def test_a_poisoned_window_is_dropped_and_the_judge_keeps_seeing(database_url: str) -> None:
    """The issue's failure: a window whose count overflowed the column made every later flush
    a 500, and the flusher retried it (and everything recorded after it) forever."""
    now = time.time()
    plane = ControlPlane(database_url)
    plane.start()
    f: Flusher | None = None
    try:
        plane.seed()
        r = Recorder(clock=lambda: now)
        f = Flusher(r, plane.url, plane.sdk_key(), "shop", start=False, timeout=5.0)
        poison = VersionMetrics("shop", "api", "v2", Channel.CANARY, requests=2**62)
        r.add(MetricWindow(window_start(now), poison))
        f.flush()
        r.add(MetricWindow(window_start(now), poison))  # near 2^63 together
        r.record("shop", "api", "v1", "stable", 12.0)
        f.flush()
        r.record("shop", "api", "v1", "stable", 13.0)
        assert f.flush()
        assert r.stats.pending == 0
        assert f.stats.rejected >= 1
        stable = plane.service.metrics.metrics_for("shop", "api", "v1", "stable", since=0)
        assert stable.requests >= 1  # what came after the poison arrived
        canary = plane.service.metrics.metrics_for("shop", "api", "v2", "canary", since=0)
        assert canary.requests == 0
    finally:
        if f is not None:
            f.close()
        plane.stop()
