"""The Lambda flush policy, against the real control plane: at most one flush per interval,
started after an invocation and never waited for; a flush the freeze pauses completes on the
thaw; a failed one is retried with nothing counted twice; SIGTERM flushes the rest."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

import httpx
import pytest

from coalmine.core.errors import InvalidInput
from coalmine.metrics import Recorder, window_start
from coalmine.metrics.lambda_flush import LambdaFlusher, flush_on_sigterm
from tests.helpers import FakeClock
from tests.sdk import ControlPlane

T0 = window_start(time.time() - 60)
"""where the recorders' clocks start: near the control plane's clock, as windows must be"""


class Freezable(httpx.BaseTransport):
    """Real HTTP, with a freeze: while ``thawed`` is clear, a request pauses ``where`` it is
    (``before`` sending, or ``after`` the control plane answered), as a frozen Lambda's thread."""

    def __init__(self, where: str = "before") -> None:
        self.inner = httpx.HTTPTransport()
        self.where = where
        self.thawed = threading.Event()
        self.thawed.set()
        self.paused = threading.Event()
        self.sent = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.where == "before":
            self._pause()
        response = self.inner.handle_request(request)
        response.read()
        self.sent += 1
        if self.where == "after":
            self._pause()
        return response

    def _pause(self) -> None:
        if not self.thawed.is_set():
            self.paused.set()
            assert self.thawed.wait(10), "never thawed"

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def plane(sqlite_url: str) -> Iterator[ControlPlane]:
    plane = ControlPlane(sqlite_url)
    plane.start()
    plane.seed()
    try:
        yield plane
    finally:
        plane.stop()


def stored(plane: ControlPlane, version: str = "v1", channel: str = "stable") -> tuple[int, int]:
    m = plane.service.metrics.metrics_for("shop", "api", version, channel, since=0)
    return m.requests, m.errors


def invoke(r: Recorder, f: LambdaFlusher, *, error: bool = False) -> bool:
    """One invocation's metrics work: record, then the end-of-invocation hook."""
    r.record("shop", "api", "v1", "stable", 5.0, error=error)
    return f.after_invocation()


def test_one_flush_per_interval_and_none_at_a_cold_start(plane: ControlPlane) -> None:
    mono, transport = FakeClock(0.0), Freezable()
    r = Recorder(clock=FakeClock(T0 + 1))
    with httpx.Client(transport=transport) as http:
        f = LambdaFlusher(r, plane.url, plane.sdk_key(), "shop", 10.0, clock=mono, http=http)
        assert invoke(r, f) is False  # cold start: nothing sent, no thread started
        assert not any(t.name == "coalmine-lambda-metrics" for t in threading.enumerate())
        mono.advance(9.9)
        assert invoke(r, f) is False
        assert transport.sent == 0
        mono.advance(0.1)
        assert invoke(r, f) is True  # the interval has passed: this invocation's call too
        assert f.wait_idle(5)
        assert (transport.sent, stored(plane)) == (1, (3, 0))
        for _ in range(5):  # a burst within the interval: no request
            mono.advance(1.0)
            assert invoke(r, f, error=True) is False
        assert transport.sent == 1
        mono.advance(5.0)
        assert invoke(r, f) is True
        assert f.wait_idle(5)
        assert (transport.sent, stored(plane), f.flushes_started) == (2, (9, 5), 2)
        f.close()
    assert r.stats.pending == 0


@pytest.mark.parametrize("where", ["before", "after"])
def test_a_flush_frozen_in_flight_completes_on_the_thaw_exactly_once(
    plane: ControlPlane, where: str
) -> None:
    mono, transport = FakeClock(0.0), Freezable(where)
    r = Recorder(clock=FakeClock(T0 + 1))
    with httpx.Client(transport=transport) as http:
        f = LambdaFlusher(r, plane.url, plane.sdk_key(), "shop", 10.0, clock=mono, http=http)
        mono.advance(10.0)
        transport.thawed.clear()  # the environment freezes while the POST is under way
        assert invoke(r, f)
        assert transport.paused.wait(5)
        assert not f.idle.is_set()  # the invocation returned; its POST is still paused
        for _ in range(3):  # later invocations, interval passed: still one flush in flight
            mono.advance(20.0)
            assert invoke(r, f) is False
        transport.thawed.set()  # the thaw
        assert f.wait_idle(5)
        assert (transport.sent, f.stats.failed) == (1, 0)
        assert stored(plane) == (1, 0)  # sent once, counted once
        mono.advance(10.0)
        assert invoke(r, f) is True  # the calls made while it was in flight go next
        assert f.wait_idle(5)
        assert stored(plane) == (5, 0)
        f.close()


def test_a_failed_flush_is_retried_and_nothing_is_counted_twice(plane: ControlPlane) -> None:
    mono = FakeClock(0.0)
    r = Recorder(clock=FakeClock(T0 + 1))
    f = LambdaFlusher(r, plane.url, plane.sdk_key(), "shop", 10.0, clock=mono, timeout=2.0)
    try:
        mono.advance(10.0)
        assert invoke(r, f)
        assert f.wait_idle(5)
        plane.stop()  # the control plane goes away
        mono.advance(10.0)
        assert invoke(r, f, error=True)
        assert f.wait_idle(5)
        assert f.stats.failed == 1
        assert r.stats.pending == 1  # put back
        assert f.delay == 20.0  # backing off: the wait doubles after a failure
        plane.start()
        mono.advance(10.0)
        assert not invoke(r, f)
        mono.advance(10.0)
        assert invoke(r, f)
        assert f.wait_idle(5)
        assert f.delay == 10.0
        assert stored(plane) == (4, 1)  # every call exactly once
        total = r.total("shop", "api", "v1", "stable")
        assert total is not None
        assert total.requests == 4
    finally:
        f.close()


def test_close_waits_for_the_flush_in_flight_then_sends_the_rest(plane: ControlPlane) -> None:
    mono, transport = FakeClock(0.0), Freezable()
    r = Recorder(clock=FakeClock(T0 + 1))
    with httpx.Client(transport=transport) as http:
        f = LambdaFlusher(r, plane.url, plane.sdk_key(), "shop", 10.0, clock=mono, http=http)
        mono.advance(10.0)
        transport.thawed.clear()
        assert invoke(r, f)
        assert transport.paused.wait(5)
        invoke(r, f)
        closer = threading.Thread(target=f.close)
        closer.start()
        transport.thawed.set()
        closer.join(10)
        assert not closer.is_alive()
        assert stored(plane) == (2, 0)
        assert invoke(r, f) is False  # closed: no new flush


def test_sigterm_flushes_what_is_left_then_runs_the_previous_handler(
    plane: ControlPlane,
) -> None:
    mono = FakeClock(0.0)
    r = Recorder(clock=FakeClock(T0 + 1))
    f = LambdaFlusher(r, plane.url, plane.sdk_key(), "shop", 10.0, clock=mono)
    seen: list[int] = []

    def previous(signum: int, frame: FrameType | None) -> None:
        seen.append(signum)

    before = signal.signal(signal.SIGTERM, previous)
    try:
        restore = flush_on_sigterm(f, budget=1.0)
        invoke(r, f)
        invoke(r, f, error=True)
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)
        handler(signal.SIGTERM, None)  # what the interpreter does when the signal arrives
        assert stored(plane) == (2, 1)
        assert seen == [signal.SIGTERM]
        restore()
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, before)
        f.close()
    with pytest.raises(InvalidInput, match="budget"):
        flush_on_sigterm(f, budget=0)
