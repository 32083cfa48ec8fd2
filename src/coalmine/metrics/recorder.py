"""`Recorder`: per-version request, error and latency counts, kept where each call is seen.

The SDK and the gateway call ``record(app, function, version, channel,
duration_ms, error=...)`` once per call. A recorder keeps two things under
one lock:

* **totals** — one cumulative `VersionMetrics` per (app, function, version,
  channel), for the Prometheus exposition of the process;
* **deltas** — what was recorded since the last `drain`, per key *and* per
  time window (``window`` seconds, 10 by default, aligned so that every
  process cuts the same windows). A `Flusher` drains them and sends them to
  the control plane, which merges them into the store; a failed send puts
  them back with `restore`.

Memory is bounded (DESIGN rule 6): a `VersionMetrics` is two counters and a
bounded `LatencyHistogram`; at most ``max_series`` totals are kept (the least
recently recorded series is evicted, counted in ``evicted``) and at most
``max_windows`` pending delta windows (when the flusher cannot keep up, the
oldest windows are dropped, counted in ``dropped`` and ``dropped_requests``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from coalmine.core.errors import InvalidInput, require_fields
from coalmine.core.histogram import LatencyHistogram, VersionMetrics, wire_count
from coalmine.core.model import Channel

__all__ = [
    "DEFAULT_MAX_SERIES",
    "DEFAULT_MAX_WINDOWS",
    "DEFAULT_WINDOW",
    "MAX_WINDOW_AGE",
    "MAX_WINDOW_AHEAD",
    "MetricKey",
    "MetricWindow",
    "Recorder",
    "RecorderStats",
    "window_start",
]

DEFAULT_WINDOW = 10.0
"""Seconds per delta window."""
DEFAULT_MAX_WINDOWS = 5_000
"""Pending delta windows kept while the flusher cannot send them."""
DEFAULT_MAX_SERIES = 10_000
"""Cumulative series (app, function, version, channel) kept for the exposition."""
MAX_WINDOW_AGE = 86_400.0
"""Seconds before the control plane's clock a window may start (older ones are refused)."""
MAX_WINDOW_AHEAD = 300.0
"""Seconds after the control plane's clock a window may start (clock skew)."""

MetricKey = tuple[str, str, str, Channel]
"""(app, function, version, channel)"""

_WINDOW_FIELDS = frozenset(
    {"start", "function", "version", "channel", "requests", "errors", "histogram"}
)


def window_start(t: float, window: float = DEFAULT_WINDOW) -> float:
    """The start of the window holding Unix time ``t``: a multiple of ``window``."""
    return float(math.floor(t / window) * window)


@dataclass(frozen=True, slots=True)
class MetricWindow:
    """The counts of one key in one window: what a recorder drains and the control plane stores."""

    start: float
    """Unix seconds, aligned to the recorder's window size"""
    metrics: VersionMetrics

    @property
    def key(self) -> MetricKey:
        return self.metrics.key

    @property
    def app(self) -> str:
        return self.metrics.app

    def to_dict(self) -> dict[str, Any]:
        """The wire form of one window of a batch (the app is the batch's)."""
        m = self.metrics
        return {
            "start": self.start,
            "function": m.function,
            "version": m.version,
            "channel": str(m.channel),
            "requests": m.requests,
            "errors": m.errors,
            "histogram": m.histogram.to_dict(),
        }

    @classmethod
    def from_dict(cls, app: str, data: Mapping[str, Any]) -> MetricWindow:
        """Read one window of a batch of ``app``, validating it (it comes from the network):
        counts up to `coalmine.core.histogram.MAX_COUNT`, a histogram within its bounds."""
        if not isinstance(data, Mapping):
            raise InvalidInput("a metric window must be a JSON object")
        require_fields(data, _WINDOW_FIELDS, "a metric window")
        start = data["start"]
        if isinstance(start, bool) or not isinstance(start, int | float):
            raise InvalidInput(f"window start must be a number of Unix seconds, got {start!r}")
        try:
            seconds = float(start)
        except OverflowError:  # an int beyond any float
            seconds = math.inf
        if not math.isfinite(seconds) or seconds < 0:
            raise InvalidInput(f"window start must be finite Unix seconds >= 0, got {seconds!r}")
        metrics = VersionMetrics(
            app,
            data["function"],
            data["version"],
            data["channel"],
            wire_count(data["requests"], "requests"),
            wire_count(data["errors"], "errors"),
            LatencyHistogram.from_dict(data["histogram"]),
        )
        if metrics.histogram.count > metrics.requests:
            raise InvalidInput(
                f"the histogram counts {metrics.histogram.count} latencies but the window"
                f" has only {metrics.requests} requests"
            )
        return cls(seconds, metrics)


@dataclass(frozen=True, slots=True)
class RecorderStats:
    recorded: int
    """requests recorded since start"""
    series: int
    """cumulative series kept now"""
    pending: int
    """delta windows waiting to be drained"""
    dropped: int
    """delta windows dropped because more than ``max_windows`` were pending"""
    dropped_requests: int
    """requests counted in the dropped windows"""
    evicted: int
    """cumulative series evicted because more than ``max_series`` were live"""


class Recorder:
    """Thread-safe per-version counters and histograms: cumulative totals and windowed deltas.

    ``deltas=False`` keeps only the totals (the control plane's view of what
    it ingested: nothing drains it). ``clock`` (Unix seconds) places records
    in windows.
    """

    def __init__(
        self,
        *,
        window: float = DEFAULT_WINDOW,
        max_windows: int = DEFAULT_MAX_WINDOWS,
        max_series: int = DEFAULT_MAX_SERIES,
        deltas: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(window, bool) or not isinstance(window, int | float):
            raise InvalidInput(f"window must be a number of seconds, got {window!r}")
        if not 1 <= window <= 3600:
            raise InvalidInput(f"window {window!r} must be from 1 to 3600 seconds")
        for what, n in (("max_windows", max_windows), ("max_series", max_series)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise InvalidInput(f"{what} must be a whole number of at least 1, got {n!r}")
        self.window = float(window)
        self.max_windows = max_windows
        self.max_series = max_series
        self.deltas = deltas
        self._clock = clock
        self._lock = threading.Lock()
        self._totals: OrderedDict[MetricKey, VersionMetrics] = OrderedDict()
        self._pending: dict[tuple[float, MetricKey], VersionMetrics] = {}
        self._recorded = 0
        self._dropped = 0
        self._dropped_requests = 0
        self._evicted = 0

    # -- recording -------------------------------------------------------------------

    def record(
        self,
        app: str,
        function: str,
        version: str,
        channel: Channel | str,
        duration_ms: float | None,
        *,
        error: bool = False,
    ) -> None:
        """Count one call of ``version`` of ``function``: its duration (None if not measured).

        Raises `InvalidInput` for a bad name, channel or duration (callers on a
        request path catch it: see `coalmine.sdk.Client.record`).
        """
        key = (app, function, version, channel)
        start = window_start(self._clock(), self.window)
        with self._lock:
            total = self._total(key)
            total.record(duration_ms, error=error)  # validates the duration before counting
            self._recorded += 1
            if self.deltas:
                self._delta(start, total.key).record(duration_ms, error=error)

    def add(self, window: MetricWindow) -> None:
        """Merge a whole window (say, one the control plane ingested) into totals and deltas."""
        if not isinstance(window, MetricWindow):
            raise InvalidInput(f"can only add a MetricWindow, got {type(window).__name__}")
        m = window.metrics
        with self._lock:
            self._total(m.key).merge(m)
            self._recorded += m.requests
            if self.deltas:
                self._delta(window.start, m.key).merge(m)

    def _total(self, key: tuple[str, str, str, Channel | str]) -> VersionMetrics:
        total = self._totals.get(key)  # type: ignore[arg-type]  # a str channel hashes as its Channel
        if total is None:
            total = VersionMetrics(*key)  # type: ignore[arg-type]  # validates names and channel
            self._totals[total.key] = total
            while len(self._totals) > self.max_series:
                self._totals.popitem(last=False)
                self._evicted += 1
        else:
            self._totals.move_to_end(total.key)
        return total

    def _delta(self, start: float, key: MetricKey) -> VersionMetrics:
        delta = self._pending.get((start, key))
        if delta is None:
            delta = VersionMetrics(*key)
            self._pending[(start, key)] = delta
            self._trim()
        return delta

    def _trim(self) -> None:
        """Drop the oldest pending windows beyond ``max_windows`` (the dict is oldest first)."""
        while len(self._pending) > self.max_windows:
            oldest = next(iter(self._pending))
            lost = self._pending.pop(oldest)
            self._dropped += 1
            self._dropped_requests += lost.requests

    # -- draining --------------------------------------------------------------------

    def drain(self, app: str | None = None) -> list[MetricWindow]:
        """Take the deltas recorded since the last drain (of ``app`` only, if given)."""
        with self._lock:
            if app is None:
                taken, self._pending = self._pending, {}
            else:
                taken = {k: v for k, v in self._pending.items() if k[1][0] == app}
                for k in taken:
                    del self._pending[k]
        return [MetricWindow(start, metrics) for (start, _), metrics in taken.items()]

    def restore(self, windows: Iterable[MetricWindow]) -> None:
        """Put drained windows back (a send failed), ahead of newer ones; still bounded.

        A restored window merges with a pending one of the same key and start,
        so nothing is counted twice or lost, short of the ``max_windows`` cap.
        """
        back: dict[tuple[float, MetricKey], VersionMetrics] = {}
        for w in windows:
            k = (w.start, w.key)
            if k in back:
                back[k].merge(w.metrics)
            else:
                back[k] = w.metrics.copy()
        if not back or not self.deltas:
            return
        with self._lock:
            for k, metrics in self._pending.items():
                if k in back:
                    back[k].merge(metrics)
                else:
                    back[k] = metrics
            self._pending = back
            self._trim()

    # -- reading ---------------------------------------------------------------------

    def totals(self) -> list[VersionMetrics]:
        """Copies of the cumulative series, sorted by key."""
        with self._lock:
            out = [m.copy() for m in self._totals.values()]
        return sorted(out, key=lambda m: m.key)

    def total(
        self, app: str, function: str, version: str, channel: Channel | str
    ) -> VersionMetrics | None:
        """A copy of one cumulative series, or None if it was never recorded (or evicted)."""
        with self._lock:
            m = self._totals.get((app, function, version, channel))  # type: ignore[arg-type]
            return m.copy() if m is not None else None

    @property
    def stats(self) -> RecorderStats:
        with self._lock:
            return RecorderStats(
                recorded=self._recorded,
                series=len(self._totals),
                pending=len(self._pending),
                dropped=self._dropped,
                dropped_requests=self._dropped_requests,
                evicted=self._evicted,
            )
