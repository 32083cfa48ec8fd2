"""The Prometheus exposition of a recorder: names, labels, counts, buckets; no global registry."""

from __future__ import annotations

import subprocess
import sys

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from coalmine.core.errors import InvalidInput
from coalmine.core.histogram import LatencyHistogram
from coalmine.metrics import Flusher, Recorder
from coalmine.metrics.exposition import (
    DEFAULT_BUCKETS_MS,
    DEFAULT_BUCKETS_SECONDS,
    DEPRECATED_ENV,
    DEPRECATED_NAMES,
    FunctionCollector,
    RecorderCollector,
    cumulative_buckets,
    deprecated_names,
    registry,
    render,
)


def scrape(*collectors: RecorderCollector | FunctionCollector) -> dict[str, list[Sample]]:
    body, content_type = render(registry(*collectors))
    assert content_type.startswith("text/plain")
    out: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(body.decode()):
        out.setdefault(family.name, []).extend(family.samples)
    return out


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_counts_per_version_and_channel_with_their_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEPRECATED_ENV, raising=False)
    r = Recorder()
    for i in range(90):
        r.record("shop", "api", "v1", "stable", 20.0, error=i < 3)
    for i in range(10):
        r.record("shop", "api", "v2", "canary", 700.0, error=i < 4)
    got = scrape(RecorderCollector(r))

    stable = {"app": "shop", "function": "api", "version": "v1", "channel": "stable"}
    canary = {"app": "shop", "function": "api", "version": "v2", "channel": "canary"}
    assert value(got["coalmine_requests"], "coalmine_requests_total", **stable) == 90
    assert value(got["coalmine_requests"], "coalmine_requests_total", **canary) == 10
    assert value(got["coalmine_errors"], "coalmine_errors_total", **stable) == 3
    assert value(got["coalmine_errors"], "coalmine_errors_total", **canary) == 4
    duration = got["coalmine_request_duration_seconds"]
    name = "coalmine_request_duration_seconds"
    assert value(duration, f"{name}_count", **canary) == 10
    assert value(duration, f"{name}_sum", **canary) == 7.0  # seconds
    # 20 ms is below le=0.025, 700 ms below le=1: the canary is the slow one
    assert value(duration, f"{name}_bucket", **stable, le="0.01") == 0
    assert value(duration, f"{name}_bucket", **stable, le="0.025") == 90
    assert value(duration, f"{name}_bucket", **canary, le="0.5") == 0
    assert value(duration, f"{name}_bucket", **canary, le="1.0") == 10
    assert value(duration, f"{name}_bucket", **canary, le="+Inf") == 10
    assert "coalmine_latency_ms" not in got  # deprecated: only when asked for
    assert (
        value(got["coalmine_metrics_dropped_windows"], "coalmine_metrics_dropped_windows_total")
        == 0
    )


def test_buckets_are_cumulative_and_end_with_every_value() -> None:
    h = LatencyHistogram()
    for v in (0.0, 0.5, 3.0, 3.0, 40.0, 99.0, 101.0, 100_000.0):  # milliseconds
        h.add(v)
    buckets = cumulative_buckets(h)
    assert [le for le, _ in buckets] == [repr(b) for b in DEFAULT_BUCKETS_SECONDS] + ["+Inf"]
    counts = dict(buckets)
    assert counts["0.001"] == 2  # the zero bucket and 0.5 ms
    assert counts["0.005"] == 4
    assert counts["0.1"] == 6
    assert counts["0.25"] == 7
    assert counts["60.0"] == 7
    assert counts["+Inf"] == 8
    assert [c for _, c in buckets] == sorted(c for _, c in buckets)
    # the deprecated millisecond histogram counts the same values under its own bounds
    in_ms = cumulative_buckets(h, DEFAULT_BUCKETS_MS, unit=1.0)
    assert [le for le, _ in in_ms][:3] == ["1.0", "2.5", "5.0"]
    assert [c for _, c in in_ms] == [c for _, c in buckets]


def test_the_deprecated_names_are_served_beside_the_new_ones_when_asked() -> None:
    r = Recorder()
    for latency in (20.0, 700.0):
        r.record("shop", "api", "v2", "canary", latency)
    got = scrape(RecorderCollector(r, deprecated=True))
    canary = {"app": "shop", "function": "api", "version": "v2", "channel": "canary"}
    old, new = got["coalmine_latency_ms"], got["coalmine_request_duration_seconds"]
    assert value(old, "coalmine_latency_ms_sum", **canary) == 720.0
    assert value(new, "coalmine_request_duration_seconds_sum", **canary) == 0.72
    for ms, seconds in zip(DEFAULT_BUCKETS_MS, DEFAULT_BUCKETS_SECONDS, strict=True):
        assert value(old, "coalmine_latency_ms_bucket", **canary, le=repr(ms)) == value(
            new, "coalmine_request_duration_seconds_bucket", **canary, le=repr(seconds)
        )
    assert value(old, "coalmine_latency_ms_bucket", **canary, le="25.0") == 1
    assert DEPRECATED_NAMES["coalmine_latency_ms"] == "coalmine_request_duration_seconds"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, False), ("", False), ("0", False), ("off", False), ("1", True), (" TRUE ", True)],
)
def test_deprecated_names_are_asked_for_in_the_environment(raw: str | None, expected: bool) -> None:
    env = {} if raw is None else {DEPRECATED_ENV: raw}
    assert deprecated_names(env) is expected


def test_a_bad_deprecated_names_setting_says_what_to_give() -> None:
    with pytest.raises(InvalidInput, match="invalid COALMINE_METRICS_DEPRECATED_NAMES 'maybe'"):
        deprecated_names({DEPRECATED_ENV: "maybe"})


def test_a_function_collector_and_flusher_health() -> None:
    r = Recorder()
    flusher = Flusher(r, "http://127.0.0.1:9", "k", "shop", start=False)
    try:
        got = scrape(
            RecorderCollector(r, flusher=flusher),
            FunctionCollector(
                "coalmine_release_exposure_ratio",
                "exposure",
                ("app", "release"),
                lambda: [(("shop", "shop-1"), 0.1)],
            ),
        )
    finally:
        flusher.close()
    exposure = got["coalmine_release_exposure_ratio"]
    assert value(exposure, "coalmine_release_exposure_ratio", app="shop") == 0.1
    assert (
        value(got["coalmine_metrics_flush_failures"], "coalmine_metrics_flush_failures_total") == 0
    )


def test_openmetrics_when_asked_and_nothing_in_the_global_registry() -> None:
    r = Recorder()
    r.record("shop", "api", "v1", "stable", 1.0)
    body, content_type = render(
        registry(RecorderCollector(r)), "application/openmetrics-text; version=1.0.0"
    )
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    names = {m.name for m in prometheus_client.REGISTRY.collect()}
    assert not any(n.startswith("coalmine") for n in names)


def test_the_sdk_and_the_recorder_never_import_prometheus_client() -> None:
    code = (
        "import sys, coalmine.sdk, coalmine.metrics;"
        "from coalmine.metrics import Flusher, Recorder;"
        "print('prometheus_client' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert out == "False"
