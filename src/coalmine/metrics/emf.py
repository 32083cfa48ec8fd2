"""CloudWatch Embedded Metric Format (EMF): per-version lines a Lambda writes to stdout.

In a Lambda, whatever the function prints goes to CloudWatch Logs, and a line
that is an EMF document becomes CloudWatch metrics with no API call and no
extra code. `emf_documents` builds the documents of one series (app,
function, version, channel) following the published specification:

* the root holds ``_aws`` (``Timestamp`` in milliseconds since the epoch,
  ``CloudWatchMetrics``: one directive with ``Namespace``, ``Dimensions``
  ``[["app", "function", "version", "channel"]]`` and ``Metrics``) and one
  member per dimension (a string) and per metric (a number or an array of
  numbers);
* metrics: ``latency`` (Milliseconds, an array of the calls' durations),
  ``requests`` and ``errors`` (Count);
* limits: at most 100 values in a metric's array, 100 metrics per directive,
  30 dimensions per dimension set; more latencies than 100 make more lines
  (the counts go in the first only, so summing every line gives the counts).

`EmfWriter` buffers what one invocation records, per series, and writes one
line per series when the invocation ends (`flush`): a handler that records
once writes one line, a batch of 500 SQS records of one version writes one
line with ``requests`` 500, not 500 lines. Memory is bounded: a series that
reaches 100 latencies, or a 65th series, is written at once.

`emf_enabled` reads the ``COALMINE_EMF`` setting (``1`` / ``0``; by default
on inside Lambda, off elsewhere) and ``COALMINE_EMF_NAMESPACE`` the namespace
(``coalmine`` by default). See docs/metrics.md, "From Lambda".
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from coalmine.core.errors import InvalidInput
from coalmine.core.model import Channel
from coalmine.metrics.recorder import MetricKey

__all__ = [
    "DEFAULT_NAMESPACE",
    "DIMENSIONS",
    "MAX_DIMENSIONS",
    "MAX_METRICS",
    "MAX_VALUES",
    "EmfWriter",
    "emf_documents",
    "emf_enabled",
    "emf_namespace",
]

log = logging.getLogger("coalmine.metrics")

DEFAULT_NAMESPACE = "coalmine"
DIMENSIONS = ("app", "function", "version", "channel")
MAX_VALUES = 100
"""values in one metric's array (the specification's limit)"""
MAX_METRICS = 100
"""metric definitions in one directive"""
MAX_DIMENSIONS = 30
"""dimension keys in one dimension set"""
_MAX_NAMESPACE = 1024
_MAX_SERIES = 64
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def emf_enabled(environ: Mapping[str, str], *, default: bool) -> bool:
    """``COALMINE_EMF`` (1/0, true/false, on/off) or ``default`` when it is unset or empty."""
    raw = environ.get("COALMINE_EMF", "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise InvalidInput(f"invalid COALMINE_EMF {raw!r}: use 1 (on) or 0 (off)")


def emf_namespace(environ: Mapping[str, str]) -> str:
    """``COALMINE_EMF_NAMESPACE``, or ``coalmine``."""
    return _check_namespace(environ.get("COALMINE_EMF_NAMESPACE", "").strip() or DEFAULT_NAMESPACE)


def _check_namespace(namespace: object) -> str:
    if (
        not isinstance(namespace, str)
        or not 1 <= len(namespace) <= _MAX_NAMESPACE
        or any(c.isspace() and c != " " for c in namespace)
    ):
        raise InvalidInput(
            f"invalid CloudWatch namespace {namespace!r}: 1-{_MAX_NAMESPACE} characters,"
            " no tabs or newlines"
        )
    return namespace


def emf_documents(
    key: MetricKey,
    *,
    requests: int,
    errors: int,
    latencies: Sequence[float] = (),
    timestamp_ms: int,
    namespace: str = DEFAULT_NAMESPACE,
) -> list[dict[str, Any]]:
    """The EMF documents of one series: ``requests`` and ``errors`` (counts) and ``latencies``
    (milliseconds, one value per measured call), split so no array has over 100 values.

    The first document carries the counts and up to 100 latencies; each further
    one up to 100 more latencies. Raises `InvalidInput` for a negative count,
    more errors than requests, or a latency that is not a finite number >= 0.
    """
    app, function, version, channel = key
    for what, n in (("requests", requests), ("errors", errors)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidInput(f"{what} must be a whole number >= 0, got {n!r}")
    if errors > requests:
        raise InvalidInput(f"{errors} errors in {requests} requests")
    values = [_latency(v) for v in latencies]
    dimensions = {
        "app": app,
        "function": function,
        "version": version,
        "channel": str(Channel(channel)),
    }
    docs: list[dict[str, Any]] = []
    first = True
    while first or values:
        chunk, values = values[:MAX_VALUES], values[MAX_VALUES:]
        metrics: list[dict[str, str]] = []
        members: dict[str, Any] = {}
        if first:
            metrics += [{"Name": "requests", "Unit": "Count"}, {"Name": "errors", "Unit": "Count"}]
            members.update(requests=requests, errors=errors)
        if chunk:
            metrics.append({"Name": "latency", "Unit": "Milliseconds"})
            members["latency"] = chunk if len(chunk) > 1 else chunk[0]
        docs.append(
            {
                "_aws": {
                    "Timestamp": timestamp_ms,
                    "CloudWatchMetrics": [
                        {
                            "Namespace": namespace,
                            "Dimensions": [list(DIMENSIONS)],
                            "Metrics": metrics,
                        }
                    ],
                },
                **dimensions,
                **members,
            }
        )
        first = False
    return docs


def _latency(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"a latency must be a finite number of milliseconds, got {value!r}")
    if value < 0:
        raise InvalidInput(f"a latency must be >= 0 ms, got {value!r}")
    return round(float(value), 3)  # a microsecond is finer than any alarm needs


class _Series:
    __slots__ = ("errors", "latencies", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latencies: list[float] = []


class EmfWriter:
    """Buffer calls per series and write them as EMF lines to ``stream`` (stdout) at `flush`.

    Thread-safe. `add` never writes more than it must (a full series); the
    handler decorator calls `flush` once at the end of each invocation, before
    returning, so the lines are in the invocation's own log output (and a Lambda
    destroyed afterwards loses nothing of them). Never raises on the request
    path: a write that fails is logged and its lines dropped.
    """

    def __init__(
        self,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.namespace = _check_namespace(namespace)
        self._stream = stream
        self._clock = clock
        self._lock = threading.Lock()
        self._series: dict[MetricKey, _Series] = {}
        self.written = 0
        """lines written so far"""

    def add(
        self,
        app: str,
        function: str,
        version: str,
        channel: Channel | str,
        duration_ms: float | None,
        *,
        error: bool = False,
    ) -> None:
        """Count one call (its duration, if measured) in the series of the current invocation."""
        key: MetricKey = (app, function, version, Channel(channel))
        if duration_ms is not None:
            duration_ms = _latency(duration_ms)
        full: list[tuple[MetricKey, _Series]] = []
        with self._lock:
            series = self._series.get(key)
            if series is None:
                if len(self._series) >= _MAX_SERIES:
                    full = list(self._series.items())
                    self._series.clear()
                series = self._series[key] = _Series()
            series.requests += 1
            series.errors += bool(error)
            if duration_ms is not None:
                series.latencies.append(duration_ms)
                if len(series.latencies) >= MAX_VALUES:
                    full.append((key, self._series.pop(key)))
        if full:
            self._write(full)

    def flush(self) -> int:
        """Write every buffered series; the number of lines written."""
        with self._lock:
            taken, self._series = list(self._series.items()), {}
        return self._write(taken) if taken else 0

    def _write(self, taken: list[tuple[MetricKey, _Series]]) -> int:
        now = int(self._clock() * 1000)
        try:
            lines = [
                json.dumps(doc, separators=(",", ":"), allow_nan=False)
                for key, s in taken
                for doc in emf_documents(
                    key,
                    requests=s.requests,
                    errors=s.errors,
                    latencies=s.latencies,
                    timestamp_ms=now,
                    namespace=self.namespace,
                )
            ]
            stream = self._stream if self._stream is not None else sys.stdout
            stream.write("\n".join(lines) + "\n")  # one write: lines of threads never interleave
            stream.flush()
        except Exception as exc:
            log.warning("coalmine: cannot write CloudWatch EMF lines: %s", exc)
            return 0
        with self._lock:
            self.written += len(lines)
        return len(lines)
