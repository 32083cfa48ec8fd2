"""The recorder: totals and windowed deltas per version, drained exactly, bounded under any load."""

from __future__ import annotations

import json
import math
import random
import threading

import pytest

from coalmine.core.errors import InvalidInput
from coalmine.core.histogram import LatencyHistogram, VersionMetrics
from coalmine.core.model import Channel
from coalmine.metrics import MetricWindow, Recorder, window_start
from tests.helpers import T0, FakeClock


def merged(windows: list[MetricWindow], key: tuple[str, str, str, Channel]) -> VersionMetrics:
    out = VersionMetrics(*key)
    for w in windows:
        if w.key == key:
            out.merge(w.metrics)
    return out


def test_window_start_is_aligned() -> None:
    assert window_start(T0 + 9.999) == T0
    assert window_start(T0 + 10) == T0 + 10
    assert window_start(T0 + 61, 60) == T0 + 60 - (T0 % 60)
    assert window_start(T0 + 3, 10) % 10 == 0


def test_record_keeps_totals_and_windowed_deltas_until_drained() -> None:
    clock = FakeClock(T0 + 3)
    r = Recorder(clock=clock)
    r.record("shop", "api", "v1", "stable", 10.0)
    r.record("shop", "api", "v2", Channel.CANARY, 200.0, error=True)
    clock.now = T0 + 12  # the next window
    r.record("shop", "api", "v2", "canary", 300.0)
    r.record("shop", "api", "v2", "canary", None)  # a call without a measured latency

    first = r.drain()
    assert sorted((w.start, w.key, w.metrics.requests, w.metrics.errors) for w in first) == [
        (T0, ("shop", "api", "v1", Channel.STABLE), 1, 0),
        (T0, ("shop", "api", "v2", Channel.CANARY), 1, 1),
        (T0 + 10, ("shop", "api", "v2", Channel.CANARY), 2, 0),
    ]
    assert r.drain() == []  # deltas are gone once drained
    canary = r.total("shop", "api", "v2", "canary")
    assert canary is not None  # totals stay
    assert (canary.requests, canary.errors, canary.histogram.count) == (3, 1, 2)
    assert canary.histogram.max == 300.0
    assert [m.key for m in r.totals()] == [
        ("shop", "api", "v1", Channel.STABLE),
        ("shop", "api", "v2", Channel.CANARY),
    ]
    # the drained deltas add up to the totals exactly
    assert merged(first, canary.key).to_dict() == canary.to_dict()
    assert r.stats.recorded == 4


def test_drain_by_app_leaves_the_other_apps_pending() -> None:
    r = Recorder(clock=FakeClock())
    r.record("shop", "api", "v1", "stable", 1.0)
    r.record("bank", "pay", "v1", "stable", 1.0)
    assert [w.app for w in r.drain("bank")] == ["bank"]
    assert [w.app for w in r.drain()] == ["shop"]


def test_bad_input_raises_and_counts_nothing() -> None:
    r = Recorder(clock=FakeClock())
    with pytest.raises(InvalidInput, match="channel"):
        r.record("shop", "api", "v1", "beta", 1.0)
    with pytest.raises(InvalidInput, match="function name"):
        r.record("shop", "Not A Name", "v1", "stable", 1.0)
    with pytest.raises(InvalidInput, match="negative"):
        r.record("shop", "api", "v1", "stable", -1.0)
    assert r.stats.recorded == 0
    assert r.drain() == []
    with pytest.raises(InvalidInput, match="window"):
        Recorder(window=0)
    with pytest.raises(InvalidInput, match="max_windows"):
        Recorder(max_windows=0)


def test_pending_windows_are_capped_dropping_the_oldest_with_a_count() -> None:
    clock = FakeClock()
    r = Recorder(clock=clock, max_windows=100, max_series=50)
    for i in range(10_000):  # 10,000 keys, far more than the caps
        clock.now = T0 + 10 * (i // 1000)
        r.record("shop", f"fn-{i}", "v1", "canary", 5.0, error=i % 2 == 0)
    stats = r.stats
    assert stats.pending == 100
    assert stats.dropped == 9_900
    assert stats.dropped_requests == 9_900
    assert stats.series == 50
    assert stats.evicted == 9_950
    assert stats.recorded == 10_000
    kept = r.drain()
    # the newest windows are the ones kept
    assert {w.metrics.function for w in kept} == {f"fn-{i}" for i in range(9_900, 10_000)}
    assert {m.function for m in r.totals()} == {f"fn-{i}" for i in range(9_950, 10_000)}


def test_series_recorded_again_are_kept_least_recently_used_last() -> None:
    r = Recorder(clock=FakeClock(), max_series=2)
    r.record("shop", "a", "v1", "stable", 1.0)
    r.record("shop", "b", "v1", "stable", 1.0)
    r.record("shop", "a", "v1", "stable", 1.0)  # a is used again: b is the oldest now
    r.record("shop", "c", "v1", "stable", 1.0)
    assert [m.function for m in r.totals()] == ["a", "c"]


def test_restore_merges_back_ahead_of_newer_windows_and_stays_bounded() -> None:
    clock = FakeClock()
    r = Recorder(clock=clock, max_windows=3)
    r.record("shop", "api", "v1", "stable", 1.0)
    failed = r.drain()  # a send that will fail
    r.record("shop", "api", "v1", "stable", 2.0)  # same window, recorded meanwhile
    clock.now = T0 + 10
    r.record("shop", "api", "v1", "stable", 3.0)
    r.restore(failed)
    back = r.drain()
    assert [(w.start, w.metrics.requests) for w in back] == [(T0, 2), (T0 + 10, 1)]

    # restored (older) windows are the first dropped when the cap is reached
    r.restore(back)
    clock.now = T0 + 20
    r.record("shop", "api", "v1", "stable", 4.0)
    clock.now = T0 + 30
    r.record("shop", "api", "v1", "stable", 5.0)
    assert [w.start for w in r.drain()] == [T0 + 10, T0 + 20, T0 + 30]
    assert r.stats.dropped == 1
    assert r.stats.dropped_requests == 2


def test_concurrent_recording_and_draining_loses_nothing() -> None:
    r = Recorder()
    threads, per_thread = 8, 5_000
    drained: list[MetricWindow] = []
    done = threading.Event()

    def drain_until_done() -> None:
        while not done.is_set():
            drained.extend(r.drain())
        drained.extend(r.drain())

    def work(n: int) -> None:
        channel = "canary" if n % 2 else "stable"
        for i in range(per_thread):
            r.record("shop", "api", f"v{n % 2 + 1}", channel, float(i % 100 + 1), error=i % 10 == 0)

    drainer = threading.Thread(target=drain_until_done)
    drainer.start()
    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    done.set()
    drainer.join()
    for key in (("shop", "api", "v1", Channel.STABLE), ("shop", "api", "v2", Channel.CANARY)):
        total = r.total(*key)
        assert total is not None
        assert total.requests == threads // 2 * per_thread
        assert total.errors == threads // 2 * per_thread // 10
        assert merged(drained, key).to_dict() == total.to_dict()


def test_percentiles_of_drained_and_merged_windows_stay_within_one_percent() -> None:
    rng = random.Random(7)
    clock = FakeClock()
    r = Recorder(clock=clock)
    values = [rng.lognormvariate(3, 1) for _ in range(20_000)]
    for i, v in enumerate(values):
        clock.now = T0 + i * 0.01  # 200 s: twenty windows
        r.record("shop", "api", "v2", "canary", v)
    windows = r.drain()
    assert len(windows) == 20
    hist = merged(windows, ("shop", "api", "v2", Channel.CANARY)).histogram
    ordered = sorted(values)
    for q in (0.5, 0.9, 0.95, 0.99, 0.999):
        exact = ordered[math.floor(q * (len(ordered) - 1))]
        got = hist.quantile(q)
        assert got is not None
        assert abs(got - exact) <= 0.01 * exact, q
    assert hist.bucket_count <= hist.max_buckets + 1


def test_a_window_round_trips_through_json_and_is_validated() -> None:
    m = VersionMetrics("shop", "api", "v2", Channel.CANARY)
    m.record(12.5, error=True)
    m.record(None)
    w = MetricWindow(T0, m)
    data = json.loads(json.dumps(w.to_dict()))
    assert set(data) == {
        "start",
        "function",
        "version",
        "channel",
        "requests",
        "errors",
        "histogram",
    }
    back = MetricWindow.from_dict("shop", data)
    assert back.start == T0
    assert back.metrics.to_dict() == m.to_dict()

    def bad(match: str, **changes: object) -> None:
        with pytest.raises(InvalidInput, match=match):
            MetricWindow.from_dict("shop", {**data, **changes})

    bad("start must be finite", start=math.nan)
    bad("start must be finite", start=-10)
    bad("Unix seconds", start="soon")
    bad("channel", channel="beta")
    bad("errors .* cannot exceed requests", errors=3)
    bad("only 0 requests", requests=0, errors=0)
    bad("histogram count", histogram={**data["histogram"], "count": 5})
    with pytest.raises(InvalidInput, match="missing: start"):
        MetricWindow.from_dict("shop", {k: v for k, v in data.items() if k != "start"})
    with pytest.raises(InvalidInput, match="unknown: extra"):
        MetricWindow.from_dict("shop", {**data, "extra": 1})
    assert LatencyHistogram.from_dict(data["histogram"]).count == 1
