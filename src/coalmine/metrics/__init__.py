"""Per-version metrics of the data plane: recorders, the flusher, and (apart) the exposition.

A `Recorder` counts requests, errors and latency (a mergeable log-bucketed
histogram, `coalmine.core.histogram`) per (app, function, version, channel)
where each call is seen: in the SDK and in the gateway. A `Flusher` sends its
deltas, in time windows, to the control plane, which keeps them in the
store. `coalmine.metrics.exposition` serves the totals to Prometheus; it is
not imported here, because it needs prometheus-client and this package is
part of the base install (only the standard library, ``coalmine.core`` and
httpx). See docs/metrics.md.
"""

from coalmine.metrics.emf import EmfWriter, emf_documents
from coalmine.metrics.flush import (
    DEFAULT_INTERVAL,
    DEFAULT_MAX_BATCH,
    METRICS_PATH,
    Flusher,
    FlushStats,
    batch,
)
from coalmine.metrics.lambda_flush import DEFAULT_LAMBDA_INTERVAL, LambdaFlusher, flush_on_sigterm
from coalmine.metrics.recorder import (
    DEFAULT_MAX_SERIES,
    DEFAULT_MAX_WINDOWS,
    DEFAULT_WINDOW,
    MAX_WINDOW_AGE,
    MAX_WINDOW_AHEAD,
    MetricKey,
    MetricWindow,
    Recorder,
    RecorderStats,
    window_start,
)

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_LAMBDA_INTERVAL",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_SERIES",
    "DEFAULT_MAX_WINDOWS",
    "DEFAULT_WINDOW",
    "MAX_WINDOW_AGE",
    "MAX_WINDOW_AHEAD",
    "METRICS_PATH",
    "EmfWriter",
    "FlushStats",
    "Flusher",
    "LambdaFlusher",
    "MetricKey",
    "MetricWindow",
    "Recorder",
    "RecorderStats",
    "batch",
    "emf_documents",
    "flush_on_sigterm",
    "window_start",
]
