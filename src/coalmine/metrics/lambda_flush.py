"""`LambdaFlusher`: ship a recorder's deltas from a Lambda, off the invocation's path.

A Lambda execution environment is frozen between invocations (no thread runs
then) and may be destroyed without warning after any of them, so the
`Flusher`'s timer thread does not fit: it would wake at random points of
frozen time and its POST would be cut by the freeze. Here the flush is driven
by invocations:

* `after_invocation` (called by the handler decorator once the handler has
  returned and its call is recorded) checks the clock: when ``interval``
  seconds (the `Flusher`'s backoff while sending fails: doubled after each
  failure, up to ``max_backoff``) have passed since the last flush started
  and none is in flight, it
  wakes one worker thread and returns at once. The POST runs on that thread
  while the runtime sends the response; the invocation never waits for the
  network. So at most one flush starts per interval, and an environment that
  sees one call a minute flushes after each call (its own, included).
* A flush the freeze interrupts resumes on the next thaw: the thread is just
  paused in a socket call. An answer that arrived meanwhile waits in the
  socket; a connection the control plane dropped meanwhile fails and the
  windows go back into the recorder (`Flusher` semantics), to be sent by a
  later flush. No flush starts while one is in flight.
* Delivery is at least once: a batch whose answer is lost after the control
  plane committed it (a read timeout) is sent again and counted twice, since
  ingestion is not idempotent. Rare, and the judge is hurt far less by a
  duplicate window than by a lost one. Nothing else is ever counted twice: a
  window is drained once and only put back when its POST failed.
* Cold start: nothing is sent at the first invocation (the interval starts
  when the environment does), and the worker thread is only started by the
  first flush, so a cold start pays for neither.
* Shutdown: what was recorded since the last flush is lost when the
  environment is destroyed, at most ``interval`` seconds of its calls (the
  EMF lines of those calls are not: they are written during each
  invocation). A Lambda with an extension registered gets a SIGTERM before it
  is destroyed (500 ms with an internal extension, 2 s with an external
  one); `flush_on_sigterm` uses it for one last flush within that budget.

Memory is the recorder's bound (``max_windows``), as for the `Flusher`.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from coalmine.core.errors import InvalidInput
from coalmine.metrics.flush import Flusher
from coalmine.metrics.recorder import Recorder

__all__ = ["DEFAULT_LAMBDA_INTERVAL", "LambdaFlusher", "flush_on_sigterm"]

log = logging.getLogger("coalmine.metrics")

DEFAULT_LAMBDA_INTERVAL = 10.0
"""Seconds between two flushes from a Lambda: one recorder window."""


class LambdaFlusher(Flusher):
    """A `Flusher` driven by invocations: `after_invocation` starts a background flush at most
    once per ``interval`` (on ``clock``, monotonic seconds); nothing runs between invocations.

    Takes the `Flusher`'s arguments; ``start`` is ignored (there is no timer thread).
    """

    def __init__(
        self,
        recorder: Recorder,
        control_plane_url: str,
        sdk_key: str,
        app: str | None = None,
        interval: float = DEFAULT_LAMBDA_INTERVAL,
        *,
        clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> None:
        kwargs["start"] = False
        super().__init__(recorder, control_plane_url, sdk_key, app, interval, **kwargs)
        self._clock = clock
        self._last = clock()
        self._wake = threading.Condition()
        self._due = False
        self._worker: threading.Thread | None = None
        self._started = 0
        self.idle = threading.Event()
        """set while no flush is in flight"""
        self.idle.set()

    def start(self) -> None:
        """Nothing to start: flushes follow invocations (`after_invocation`)."""

    @property
    def flushes_started(self) -> int:
        """background flushes `after_invocation` started"""
        return self._started

    def after_invocation(self) -> bool:
        """Start a background flush if ``interval`` has passed since the last one started and
        none is in flight; True if one was started. Never blocks on the network, never raises."""
        try:
            now = self._clock()
            if now - self._last < self.delay or not self.idle.is_set() or self._closed:
                return False  # the typical invocation: two comparisons
            with self._wake:
                if not self.idle.is_set() or self._closed or self._stop.is_set():
                    return False
                self._last = now
                self._due = True
                self._started += 1
                self.idle.clear()
                if self._worker is None:
                    self._worker = threading.Thread(
                        target=self._work, name="coalmine-lambda-metrics", daemon=True
                    )
                    self._worker.start()
                self._wake.notify()
            return True
        except Exception:
            log.exception("coalmine: cannot start a metrics flush")
            return False

    def _work(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._due or self._stop.is_set())
                if not self._due:
                    return
                self._due = False
            try:
                self.flush()
            except Exception:  # never let the thread die
                log.exception("coalmine: metrics flush failed unexpectedly")
            finally:
                self.idle.set()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait for the flush in flight, if any (tests; shutdown). True when none is left."""
        return self.idle.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Let the flush in flight finish, stop the worker, flush one last time."""
        if self._closed:
            return
        self.wait_idle(timeout)
        with self._wake:
            self._closed = True  # no new flush from here
            self._stop.set()
            self._wake.notify_all()
        if self._worker is not None:
            self._worker.join(timeout)
        self._closed = False  # let Flusher.close run its last flush and release the client
        super().close(timeout)


def flush_on_sigterm(flusher: Flusher, *, budget: float = 0.4) -> Callable[[], None]:
    """On SIGTERM, flush ``flusher`` once within ``budget`` seconds, then do what was set before.

    Lambda sends SIGTERM before destroying an environment only when an
    extension is registered (its shutdown phase: 500 ms with an internal
    extension, 2 s with an external one); without one the environment gets no
    warning and this never runs. Call it from the main thread (Python's rule
    for signal handlers), at module level of the function's code. Returns a
    function that puts the previous handler back.
    """
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not budget > 0:
        raise InvalidInput(f"budget must be a positive number of seconds, got {budget!r}")
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        try:
            flusher.timeout = min(flusher.timeout, float(budget))
            if isinstance(flusher, LambdaFlusher):
                flusher.wait_idle(budget / 2)
            flusher.flush()
        except Exception:
            log.exception("coalmine: the metrics flush at SIGTERM failed")
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore
