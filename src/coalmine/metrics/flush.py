"""`Flusher`: send a recorder's deltas to the control plane in batches, in the background.

A daemon thread wakes every ``interval`` seconds, drains the recorder and
POSTs the windows to ``/v1/metrics`` (at most ``max_batch`` windows per
request, one request per app). It never blocks or raises into the request
path (fail static, DESIGN rule 5):

* the control plane cannot be reached, times out, or answers 5xx, 401, 403,
  408, 425 or 429 (down, overloaded, or a key an operator must fix): the
  windows go back into the recorder (`Recorder.restore`, merged with what
  was recorded meanwhile, still bounded by its ``max_windows``) and are
  sent again later, the wait doubling after each failure from ``interval``
  up to ``max_backoff``; nothing is lost unless the outage lasts long
  enough for the cap to drop the oldest windows (counted);
* the control plane answers 413 (the batch is larger than it takes): the
  batch is split in two and each half sent, down to single windows;
* the control plane refuses the batch as invalid (any other 4xx: a count
  beyond its bounds, a version it does not know, a window too old): sending
  it again cannot help, and keeping it would hold back everything recorded
  after it, so the windows are dropped, counted in ``rejected``, and the
  answer is logged in one line.

``flush()`` sends at once (tests, and `close`, which flushes one last time).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from coalmine.core.errors import InvalidInput
from coalmine.core.model import validate_name
from coalmine.metrics.recorder import MetricWindow, Recorder

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_MAX_BACKOFF",
    "DEFAULT_MAX_BATCH",
    "METRICS_PATH",
    "FlushStats",
    "Flusher",
    "batch",
]

log = logging.getLogger("coalmine.metrics")

DEFAULT_INTERVAL = 5.0
"""Seconds between two flushes."""
DEFAULT_MAX_BATCH = 500
"""Windows per request (the control plane accepts up to 1000)."""
DEFAULT_MAX_BACKOFF = 60.0
"""The longest wait between two attempts while sending fails (unless ``interval`` is longer)."""
METRICS_PATH = "/v1/metrics"
_RETRY_STATUSES = frozenset({401, 403, 408, 425, 429})
_TOO_LARGE = 413


def batch(app: str, windows: Iterable[MetricWindow], window: float) -> dict[str, Any]:
    """The JSON body of ``POST /v1/metrics``: the windows of one app."""
    return {"app": app, "window": window, "windows": [w.to_dict() for w in windows]}


@dataclass(frozen=True, slots=True)
class FlushStats:
    sent: int
    """windows the control plane accepted"""
    batches: int
    """requests the control plane accepted"""
    failed: int
    """attempts that failed and were kept for a retry"""
    rejected: int
    """windows the control plane refused as invalid (4xx): dropped"""
    dropped: int
    """windows the recorder dropped because too many were pending (`RecorderStats.dropped`)"""
    last_error: str | None
    """what went wrong last, or None after a success"""


class Flusher:
    """Drain ``recorder`` every ``interval`` seconds and POST the windows to the control plane.

    ``app`` limits the flusher to that app's windows (an sdk key reads and
    writes one app); None sends every app's, one batch per app. While sending
    fails, the wait doubles from ``interval`` up to ``max_backoff`` seconds
    (`DEFAULT_MAX_BACKOFF`, or ``interval`` if longer). ``http`` is an
    ``httpx.Client`` to use (not closed here). ``start=False`` leaves the
    thread unstarted: call `start`, or only `flush`.
    """

    def __init__(
        self,
        recorder: Recorder,
        control_plane_url: str,
        sdk_key: str,
        app: str | None = None,
        interval: float = DEFAULT_INTERVAL,
        *,
        timeout: float = 5.0,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_backoff: float | None = None,
        http: httpx.Client | None = None,
        start: bool = True,
    ) -> None:
        if app is not None:
            validate_name(app, "app")
        if not control_plane_url.startswith(("http://", "https://")):
            raise InvalidInput(
                f"invalid control plane URL {control_plane_url!r}: use http(s)://host:port"
            )
        for what, value in (("interval", interval), ("timeout", timeout)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise InvalidInput(f"{what} must be a positive number of seconds, got {value!r}")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise InvalidInput(f"max_batch must be a whole number of at least 1, got {max_batch!r}")
        if max_backoff is None:
            max_backoff = max(DEFAULT_MAX_BACKOFF, float(interval))
        if (
            isinstance(max_backoff, bool)
            or not isinstance(max_backoff, int | float)
            or not max_backoff >= interval
        ):
            raise InvalidInput(
                f"max_backoff must be a number of seconds >= interval ({interval!r}),"
                f" got {max_backoff!r}"
            )
        self.recorder = recorder
        self.url = control_plane_url.rstrip("/") + METRICS_PATH
        self.app = app
        self.interval = float(interval)
        self.timeout = float(timeout)
        self.max_batch = max_batch
        self.max_backoff = float(max_backoff)
        self._headers = {"Authorization": f"Bearer {sdk_key}"}
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=timeout)
        self._flush_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._sent = self._batches = self._failed = self._rejected = 0
        self._last_error: str | None = None
        self._failing = False
        self._streak = 0  # attempts failed in a row
        if start:
            self.start()

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the background thread (once)."""
        if self._thread is not None or self._closed:
            return
        self._thread = threading.Thread(target=self._run, name="coalmine-metrics", daemon=True)
        self._thread.start()

    @property
    def delay(self) -> float:
        """Seconds until the next attempt: ``interval``, doubled after each failure in a row,
        at most ``max_backoff``."""
        streak = self._streak  # one read of an int, no lock: the Lambda hot path asks this
        return min(self.interval * 2.0 ** min(streak, 64), self.max_backoff)

    def _run(self) -> None:
        while not self._stop.wait(self.delay):
            try:
                self.flush()
            except Exception:  # never let the thread die
                log.exception("coalmine: metrics flush failed unexpectedly")

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and flush one last time (what cannot be sent then is lost)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self.flush()
        except Exception:
            log.exception("coalmine: the last metrics flush failed unexpectedly")
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Flusher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending ---------------------------------------------------------------------

    def flush(self) -> bool:
        """Send everything pending now; True when nothing is left waiting for a retry."""
        with self._flush_lock:
            windows = self.recorder.drain(self.app)
            if not windows:
                return True
            by_app: dict[str, list[MetricWindow]] = {}
            for w in windows:
                by_app.setdefault(w.app, []).append(w)
            chunks = [
                (app, chunk)
                for app, of_app in sorted(by_app.items())
                for chunk in _chunks(of_app, self.max_batch)
            ]
            for i, (app, chunk) in enumerate(chunks):
                kept = self._send(app, chunk)
                if kept:
                    self.recorder.restore(
                        [*kept, *(w for _, rest in chunks[i + 1 :] for w in rest)]
                    )
                    return False
            return True

    def _send(self, app: str, windows: Sequence[MetricWindow]) -> list[MetricWindow]:
        """POST one batch; the windows to keep for a retry (none when sent or dropped)."""
        body = batch(app, windows, self.recorder.window)
        try:
            response = self._http.post(
                self.url, json=body, headers=self._headers, timeout=self.timeout
            )
        except Exception as exc:  # unreachable, timed out, or a broken transport
            return self._failure(windows, f"{type(exc).__name__}: {exc}")
        status = response.status_code
        if 200 <= status < 300:
            with self._stats_lock:
                self._sent += len(windows)
                self._batches += 1
                self._last_error = None
                self._streak = 0
                recovered, self._failing = self._failing, False
            if recovered:
                log.info("coalmine: metrics reach %s again", self.url)
            return []
        detail = _detail(response)
        if status >= 500 or status in _RETRY_STATUSES:
            return self._failure(windows, f"HTTP {status}: {detail}")
        if status == _TOO_LARGE and len(windows) > 1:
            half = len(windows) // 2
            kept = self._send(app, windows[:half])
            return [*kept, *windows[half:]] if kept else self._send(app, windows[half:])
        with self._stats_lock:
            self._rejected += len(windows)
            self._last_error = f"HTTP {status}: {detail}"
            self._streak = 0
        log.warning(
            "coalmine: the control plane refused %d metric windows of app %s (HTTP %d: %s);"
            " they are dropped",
            len(windows),
            app,
            status,
            detail,
        )
        return []

    def _failure(self, windows: Sequence[MetricWindow], error: str) -> list[MetricWindow]:
        with self._stats_lock:
            self._failed += 1
            self._streak += 1
            self._last_error = error
            first, self._failing = not self._failing, True
        # once per outage at warning level, then quietly: the outage may last
        (log.warning if first else log.debug)(
            "coalmine: cannot send metrics to %s (%s); keeping them for a retry", self.url, error
        )
        return list(windows)

    @property
    def stats(self) -> FlushStats:
        with self._stats_lock:
            return FlushStats(
                sent=self._sent,
                batches=self._batches,
                failed=self._failed,
                rejected=self._rejected,
                dropped=self.recorder.stats.dropped,
                last_error=self._last_error,
            )


def _chunks(items: list[MetricWindow], size: int) -> Iterator[list[MetricWindow]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _detail(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    detail = data.get("detail") if isinstance(data, dict) else None
    return detail if isinstance(detail, str) else str(data)[:200]
