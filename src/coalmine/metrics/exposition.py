"""Prometheus exposition of a `Recorder`'s cumulative totals, per version and channel.

``RecorderCollector`` is a custom prometheus_client collector: each scrape
reads the recorder's totals, so nothing is registered in prometheus_client's
global registry (make one `CollectorRegistry` per app with `registry`). It
exposes, with the labels ``app``, ``function``, ``version`` and ``channel``:

* ``coalmine_requests_total`` — calls counted (a counter);
* ``coalmine_errors_total`` — failed calls (exceptions, 5xx, handler-declared);
* ``coalmine_request_duration_seconds`` — a Prometheus histogram
  (``_bucket{le=...}``, ``_sum``, ``_count``) in seconds, Prometheus' base
  unit, with the fixed bounds ``DEFAULT_BUCKETS_SECONDS``, derived from the
  log-bucketed `LatencyHistogram` (which counts milliseconds): each log
  bucket counts towards the first bound at or above its representative
  value, so a value within 1% of a bound may be counted in the next bucket
  up. Fixed bounds, not quantile gauges, because Prometheus can add
  histograms of several gateways and take ``histogram_quantile`` over any
  ``rate`` window, while quantiles of different processes cannot be combined;

and the recorder's (and flusher's) health: ``coalmine_metrics_dropped_windows_total``,
``coalmine_metrics_evicted_series_total``, ``coalmine_metrics_flush_failures_total``,
``coalmine_metrics_rejected_windows_total``.

Names follow Prometheus' conventions, so ``promtool check metrics`` passes on
every exposition. The names they replaced (`DEPRECATED_NAMES`: the
millisecond histogram ``coalmine_latency_ms``, the basis-point gauge
``coalmine_release_exposure``) are served beside the new ones only when
``COALMINE_METRICS_DEPRECATED_NAMES=1`` (`deprecated_names`), for one release
after the rename; docs/metrics.md says what to change.

Needs prometheus-client (the ``server`` or ``gateway`` extra); the rest of
`coalmine.metrics` does not, so the SDK's base install never imports it.
"""

from __future__ import annotations

from coalmine._extras import require

require("prometheus_client", "server")

import bisect  # noqa: E402
import os  # noqa: E402
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence  # noqa: E402

from prometheus_client import CollectorRegistry  # noqa: E402
from prometheus_client.core import (  # noqa: E402
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import choose_encoder  # noqa: E402
from prometheus_client.metrics_core import Metric  # noqa: E402

from coalmine.core.errors import InvalidInput  # noqa: E402
from coalmine.core.histogram import LatencyHistogram  # noqa: E402
from coalmine.metrics.flush import Flusher  # noqa: E402
from coalmine.metrics.recorder import Recorder  # noqa: E402

__all__ = [
    "DEFAULT_BUCKETS_MS",
    "DEFAULT_BUCKETS_SECONDS",
    "DEPRECATED_ENV",
    "DEPRECATED_NAMES",
    "LABELS",
    "FunctionCollector",
    "RecorderCollector",
    "Sample",
    "cumulative_buckets",
    "deprecated_names",
    "registry",
    "render",
]

DEFAULT_BUCKETS_SECONDS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""Upper bounds (seconds) of ``coalmine_request_duration_seconds`` buckets; ``+Inf`` is added."""
DEFAULT_BUCKETS_MS: tuple[float, ...] = tuple(b * 1000 for b in DEFAULT_BUCKETS_SECONDS)
"""The same bounds in milliseconds: those of the deprecated ``coalmine_latency_ms``."""
LABELS = ("app", "function", "version", "channel")

DEPRECATED_ENV = "COALMINE_METRICS_DEPRECATED_NAMES"
DEPRECATED_NAMES: Mapping[str, str] = {
    "coalmine_latency_ms": "coalmine_request_duration_seconds",
    "coalmine_release_exposure": "coalmine_release_exposure_ratio",
}
"""Each name served before the rename to Prometheus' conventions, and the name replacing it."""
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_MS = 1000.0
"""milliseconds (the unit of `LatencyHistogram`) per second"""

Sample = tuple[Sequence[str], float]
"""label values and a value"""


def deprecated_names(environ: Mapping[str, str] | None = None) -> bool:
    """Whether to serve the `DEPRECATED_NAMES` too: ``COALMINE_METRICS_DEPRECATED_NAMES``.

    ``1`` (true, yes, on) serves them beside the new names; ``0`` (false, no,
    off), empty or unset does not; anything else raises `InvalidInput`.
    """
    env = os.environ if environ is None else environ
    raw = env.get(DEPRECATED_ENV, "").strip().lower()
    if not raw or raw in _FALSE:
        return False
    if raw in _TRUE:
        return True
    raise InvalidInput(
        f"invalid {DEPRECATED_ENV} {raw!r}: use 1 (also serve the metric names deprecated"
        " by the rename to Prometheus' conventions) or 0 (only the new names)"
    )


def cumulative_buckets(
    histogram: LatencyHistogram,
    bounds: Sequence[float] = DEFAULT_BUCKETS_SECONDS,
    *,
    unit: float = _MS,
) -> list[tuple[str, float]]:
    """``(le, cumulative count)`` pairs for a Prometheus histogram, ``+Inf`` last.

    ``bounds`` are in seconds, or in the histogram's own milliseconds with
    ``unit=1``: a value counts in the first bound at or above ``value / unit``.
    A log bucket counts towards the first bound at or above its representative
    (within ``alpha`` of each of its values); the zero bucket towards the first.
    """
    counts = [0] * (len(bounds) + 1)
    if histogram.zero_count:
        counts[0] += histogram.zero_count
    for index, count in histogram.bins():
        counts[bisect.bisect_left(bounds, histogram.representative(index) / unit)] += count
    out: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip(bounds, counts, strict=False):
        running += count
        out.append((_le(bound), float(running)))
    out.append(("+Inf", float(histogram.count)))
    return out


def _le(bound: float) -> str:
    return repr(float(bound))


class RecorderCollector:
    """A prometheus_client collector of a recorder's totals (and a flusher's health).

    ``buckets`` are the histogram's upper bounds in seconds. ``deprecated``
    also serves ``coalmine_latency_ms`` (default: `deprecated_names`, read
    when the collector is made).
    """

    def __init__(
        self,
        recorder: Recorder,
        *,
        flusher: Flusher | None = None,
        buckets: Sequence[float] = DEFAULT_BUCKETS_SECONDS,
        deprecated: bool | None = None,
    ) -> None:
        bounds = tuple(float(b) for b in buckets)
        if not bounds or list(bounds) != sorted(set(bounds)) or bounds[0] <= 0:
            raise ValueError("buckets must be increasing positive seconds")
        self.recorder = recorder
        self.flusher = flusher
        self.buckets = bounds
        self.deprecated = deprecated_names() if deprecated is None else deprecated

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "coalmine_requests", "Calls of a function version, per channel.", labels=LABELS
        )
        errors = CounterMetricFamily(
            "coalmine_errors",
            "Failed calls of a function version (exceptions, 5xx, handler-declared failures).",
            labels=LABELS,
        )
        duration = HistogramMetricFamily(
            "coalmine_request_duration_seconds",
            "Duration of calls of a function version, in seconds.",
            labels=LABELS,
        )
        legacy = HistogramMetricFamily(
            "coalmine_latency_ms",
            "Deprecated: coalmine_request_duration_seconds in milliseconds; removed in the"
            " next release.",
            labels=LABELS,
        )
        legacy_bounds = tuple(b * _MS for b in self.buckets)
        for m in self.recorder.totals():
            labels = [m.app, m.function, m.version, str(m.channel)]
            requests.add_metric(labels, m.requests)
            errors.add_metric(labels, m.errors)
            duration.add_metric(
                labels, cumulative_buckets(m.histogram, self.buckets), m.histogram.sum / _MS
            )
            if self.deprecated:
                legacy.add_metric(
                    labels,
                    cumulative_buckets(m.histogram, legacy_bounds, unit=1.0),
                    m.histogram.sum,
                )
        yield requests
        yield errors
        yield duration
        if self.deprecated:
            yield legacy
        stats = self.recorder.stats
        yield CounterMetricFamily(
            "coalmine_metrics_dropped_windows",
            "Delta windows dropped because more were pending than the recorder keeps.",
            value=stats.dropped,
        )
        yield CounterMetricFamily(
            "coalmine_metrics_evicted_series",
            "Series evicted from the totals because more were live than the recorder keeps.",
            value=stats.evicted,
        )
        if self.flusher is not None:
            flushed = self.flusher.stats
            yield CounterMetricFamily(
                "coalmine_metrics_flush_failures",
                "Attempts to send metric windows to the control plane that failed (retried).",
                value=flushed.failed,
            )
            yield CounterMetricFamily(
                "coalmine_metrics_rejected_windows",
                "Metric windows the control plane refused (dropped).",
                value=flushed.rejected,
            )


class FunctionCollector:
    """A gauge (or, with ``counter``, a counter) whose samples a function returns at each
    scrape (e.g. release exposure; the Lambda target's outcomes)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str],
        read: Callable[[], Iterable[Sample]],
        *,
        counter: bool = False,
    ) -> None:
        self.counter = counter
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        self.read = read

    def collect(self) -> Iterator[Metric]:
        family = (CounterMetricFamily if self.counter else GaugeMetricFamily)(
            self.name, self.documentation, labels=self.labels
        )
        for values, value in self.read():
            family.add_metric(list(values), value)
        yield family


def registry(*collectors: RecorderCollector | FunctionCollector) -> CollectorRegistry:
    """A fresh registry holding ``collectors`` (never prometheus_client's global one)."""
    out = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        out.register(collector)
    return out


def render(reg: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """The exposition body and its content type, in the format the ``Accept`` header asks for."""
    encode, content_type = choose_encoder(accept or "")
    return encode(reg), content_type
