"""POST /v1/metrics and GET /metrics: per-version windows merged exactly into the store (SQLite
and PostgreSQL), validated before anything is written, written only by the app's sdk key or a
deployer; metrics_for reads a range of windows; the control plane's Prometheus exposition."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from coalmine.controller.schemas import MetricsBatch
from coalmine.core.errors import InvalidInput
from coalmine.core.histogram import LatencyHistogram, VersionMetrics
from coalmine.core.machine import Tick
from coalmine.core.model import Channel
from coalmine.core.tracker import Action
from coalmine.core.verdict import Outcome
from coalmine.metrics import MetricWindow, batch, window_start
from coalmine.metrics.exposition import DEPRECATED_ENV, DEPRECATED_NAMES
from tests.web.conftest import Web, bearer

T0 = window_start(time.time() - 3600)  # near the control plane's clock, as windows must be


def window(
    start: float = T0,
    *,
    function: str = "api",
    version: str = "v2",
    channel: str = "canary",
    latencies: tuple[float, ...] = (10.0,),
    errors: int = 0,
) -> MetricWindow:
    m = VersionMetrics("shop", function, version, Channel(channel))
    for i, latency in enumerate(latencies):
        m.record(latency, error=i < errors)
    return MetricWindow(start, m)


def body(*windows: MetricWindow, app: str = "shop") -> dict[str, Any]:
    return batch(app, windows, 10.0)


def post(web: Web, data: dict[str, Any] | str, headers: dict[str, str]) -> Any:
    if isinstance(data, str):
        return web.client.post(
            "/v1/metrics", content=data, headers={**headers, "Content-Type": "application/json"}
        )
    return web.client.post("/v1/metrics", json=data, headers=headers)


def test_two_batches_into_one_window_add_up_exactly(web: Web) -> None:
    web.apply()
    key = bearer(web.sdk_key("shop"))
    a = window(latencies=(10.0, 20.0), errors=1)
    b = window(latencies=(30.0, 5000.0))
    c = window(latencies=(7.0,), errors=1)
    r = post(web, body(a), key)
    assert r.status_code == 200, r.text
    assert r.json() == {"app": "shop", "merged": 1}
    r = post(web, body(b, c), key)  # c is in the same window too: merged in the batch
    assert r.json() == {"app": "shop", "merged": 2}

    got = web.service.metrics.metrics_for("shop", "api", "v2", "canary", since=T0)
    expected = a.metrics.copy()
    expected.merge(b.metrics)
    expected.merge(c.metrics)
    assert got.to_dict() == expected.to_dict()
    assert (got.requests, got.errors, got.histogram.max) == (5, 2, 5000.0)
    # the other channel of the window is its own row
    assert web.service.metrics.metrics_for("shop", "api", "v2", "stable", since=T0).requests == 0


def test_metrics_for_merges_the_windows_whose_start_is_in_the_range(web: Web) -> None:
    web.apply()
    windows = [window(T0 + 10 * i, latencies=(1.0,) * (i + 1)) for i in range(3)]  # 1, 2, 3
    assert post(web, body(*windows), web.as_("deployer")).status_code == 200

    def requests(since: float, until: float | None = None) -> int:
        m = web.service.metrics.metrics_for("shop", "api", "v2", "canary", since=since, until=until)
        assert isinstance(m, VersionMetrics)
        assert m.histogram.count == m.requests
        return m.requests

    assert requests(T0) == 6
    assert requests(T0 + 10) == 5  # since is inclusive
    assert requests(T0, T0 + 20) == 3  # until is exclusive
    assert requests(T0 + 10, T0 + 20) == 2
    assert requests(T0 + 5, T0 + 15) == 2  # by window start
    assert requests(T0 + 30) == 0
    assert requests(T0 + 20, T0 + 20) == 0
    empty = web.service.metrics.metrics_for("nowhere", "api", "v2", "canary", since=0)
    assert (empty.app, empty.channel, empty.requests, empty.histogram.count) == (
        "nowhere",
        Channel.CANARY,
        0,
        0,
    )
    with pytest.raises(InvalidInput, match="channel"):
        web.service.metrics.metrics_for("shop", "api", "v2", "beta", since=0)
    with pytest.raises(InvalidInput, match="since"):
        web.service.metrics.metrics_for("shop", "api", "v2", "canary", since=math.nan)


def _bad_histogram(w: dict[str, Any]) -> None:
    w["histogram"]["count"] += 1


def _other_layout(w: dict[str, Any]) -> None:
    h = LatencyHistogram(0.02)
    h.add(10.0)
    w["histogram"] = h.to_dict()


BAD: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("channel", lambda w: w.update(channel="beta"), "invalid channel 'beta'"),
    ("function", lambda w: w.update(function="Place Order"), "invalid function name"),
    ("version", lambda w: w.update(version="-v"), "invalid version name"),
    ("misaligned", lambda w: w.update(start=T0 + 3), "not aligned to the batch's 10 s window"),
    ("negative start", lambda w: w.update(start=-10.0), "start must be finite"),
    ("errors", lambda w: w.update(errors=5), "errors (5) cannot exceed requests (1)"),
    ("requests", lambda w: w.update(requests=-1), "requests must be a whole number"),
    ("histogram", _bad_histogram, "histogram count 2 is not the zero count plus the bin counts"),
    ("latencies", lambda w: w.update(requests=0, errors=0), "has only 0 requests"),
    ("layout", _other_layout, "the control plane keeps histograms with alpha 0.01"),
]


@pytest.mark.parametrize(("problem", "spoil", "message"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_window_is_a_400_naming_it_and_nothing_is_written(
    sqlite_web: Web, problem: str, spoil: Callable[[dict[str, Any]], None], message: str
) -> None:
    web = sqlite_web
    web.apply()
    data = body(window(T0, function="worker", version="v1"), window(T0 + 10))
    spoil(data["windows"][1])
    r = post(web, data, web.as_("deployer"))
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith("windows[1]: ")
    assert message in r.json()["detail"]
    assert web.service.metrics.metrics_for("shop", "worker", "v1", "canary", since=0).requests == 0


def test_bad_batches_on_both_stores(web: Web) -> None:
    web.apply()
    deployer = web.as_("deployer")
    good = window(T0, function="worker", version="v1")
    # a NaN start (Python's JSON carries it): 400, nothing written
    text = json.dumps(body(good, window(T0 + 10))).replace(f"{T0 + 10}", "NaN")
    r = post(web, text, deployer)
    assert r.status_code == 400, r.text
    assert (
        r.json()["detail"] == "windows[1]: window start must be finite Unix seconds >= 0, got nan"
    )
    # an unknown app: 404
    r = post(web, body(good, app="nowhere"), deployer)
    assert r.status_code == 404
    assert r.json()["detail"] == "no app named 'nowhere'"
    # not a batch at all: 422 naming the field
    r = post(web, {"app": "shop", "windows": {"start": T0}}, deployer)
    assert r.status_code == 422
    assert r.json()["detail"].startswith("windows: ")
    assert web.service.metrics.metrics_for("shop", "worker", "v1", "canary", since=0).requests == 0


def test_who_may_send_metrics(sqlite_web: Web) -> None:
    web = sqlite_web
    web.apply()
    web.apply(web_doc_bank())
    data = body(window())
    r = web.client.post("/v1/metrics", json=data)
    assert r.status_code == 401
    r = post(web, data, web.as_("viewer"))
    assert r.status_code == 403
    assert r.json()["detail"] == (
        "role viewer cannot send metrics; needs deployer or the sdk key of the app"
    )
    r = post(web, data, bearer(web.sdk_key("bank")))
    assert r.status_code == 403
    assert r.json()["detail"] == (
        "this sdk key sends only the metrics of app 'bank', not 'shop';"
        " use the sdk key of 'shop' or a deployer token"
    )
    assert web.service.metrics.metrics_for("shop", "api", "v2", "canary", since=0).requests == 0
    for headers in (bearer(web.sdk_key("shop")), web.as_("deployer"), web.as_("admin")):
        assert post(web, data, headers).status_code == 200
    assert web.service.metrics.metrics_for("shop", "api", "v2", "canary", since=0).requests == 3


def web_doc_bank() -> str:
    return "app: bank\nfunctions:\n  pay:\n    versions:\n      v1: bank.pay:handler\n"


def test_the_control_plane_exposes_what_it_ingested_releases_and_verdicts(
    web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DEPRECATED_ENV, raising=False)
    web.apply()
    r = web.client.post(
        "/v1/apps/shop/releases", json={"candidate": {"api": "v2"}}, headers=web.as_("deployer")
    )
    release_id = r.json()["id"]
    web.service.releases.advance(release_id, Tick(time.time()))  # the first step: 10%
    key = bearer(web.sdk_key("shop"))
    post(web, body(window(latencies=(100.0,) * 4, errors=1)), key)
    post(web, body(window(T0 + 10, latencies=(300.0,))), key)
    post(web, body(window(version="v1", channel="stable", latencies=(50.0,) * 9)), key)
    for outcome in (Outcome.PASS, Outcome.PASS, Outcome.INCONCLUSIVE):
        web.service.runs.record(
            release_id,
            window_start=T0,
            window_end=T0 + 60,
            outcome=outcome,
            action=Action.CONTINUE,
            results={},
            message=f"canary {outcome}",
        )
    scraper = bearer(web.tokens.create("p", "scraper").token)

    def scrape() -> list[Any]:
        r = web.client.get("/metrics", headers=scraper)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        return [s for family in text_string_to_metric_families(r.text) for s in family.samples]

    samples = scrape()

    def one(name: str, **labels: str) -> float:
        found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
        assert len(found) == 1, (name, labels, found)
        return found[0]

    canary = {"app": "shop", "function": "api", "version": "v2", "channel": "canary"}
    stable = {"app": "shop", "function": "api", "version": "v1", "channel": "stable"}
    assert one("coalmine_requests_total", **canary) == 5
    assert one("coalmine_errors_total", **canary) == 1
    assert one("coalmine_requests_total", **stable) == 9
    assert one("coalmine_errors_total", **stable) == 0
    assert one("coalmine_request_duration_seconds_count", **canary) == 5
    assert one("coalmine_request_duration_seconds_sum", **canary) == 0.7
    assert one("coalmine_request_duration_seconds_bucket", **canary, le="0.25") == 4
    assert one("coalmine_request_duration_seconds_bucket", **canary, le="0.5") == 5
    assert one("coalmine_release_exposure_ratio", app="shop", release=release_id) == 0.1
    # the latest run's verdict, one series per verdict; the runs the store holds
    release = {"app": "shop", "release": release_id}
    assert one("coalmine_release_verdict", **release, verdict="inconclusive") == 1
    assert one("coalmine_release_verdict", **release, verdict="pass") == 0
    assert one("coalmine_release_verdict", **release, verdict="fail") == 0
    assert one("coalmine_analysis_runs_total", app="shop", verdict="pass") == 2
    assert one("coalmine_analysis_runs_total", app="shop", verdict="inconclusive") == 1
    old = {name + end for name in DEPRECATED_NAMES for end in ("", "_bucket", "_sum", "_count")}
    assert not [s for s in samples if s.name in old]

    # the names deprecated by the rename, when asked for: the same counts in the old units
    monkeypatch.setenv(DEPRECATED_ENV, "1")
    samples = scrape()
    assert one("coalmine_latency_ms_count", **canary) == 5
    assert one("coalmine_latency_ms_sum", **canary) == 700
    assert one("coalmine_latency_ms_bucket", **canary, le="250.0") == 4
    assert one("coalmine_release_exposure", app="shop", release=release_id) == 1000
    assert one("coalmine_request_duration_seconds_count", **canary) == 5

    # a release that ends leaves the verdict gauge; the runs stay counted
    assert web.service.releases.rollback(release_id, "test", "enough")
    web.service.releases.advance(release_id, Tick(time.time()))  # rolling back: done
    assert web.service.releases.active("shop") is None
    samples = scrape()
    assert not [s for s in samples if s.name == "coalmine_release_verdict"]
    assert one("coalmine_analysis_runs_total", app="shop", verdict="pass") == 2


def test_concurrent_batches_into_the_same_windows_add_up(web: Web) -> None:
    """Writers race to create and update the same rows: row locks keep every count."""
    web.apply()
    threads, rounds = 6, 5
    failures: list[BaseException] = []
    gate = threading.Barrier(threads, timeout=30)

    def send(n: int) -> None:
        try:
            gate.wait()
            for i in range(rounds):
                windows = [
                    window(T0 + 10 * i, latencies=(float(n + 1),), errors=n % 2),
                    window(T0 + 10 * i, function="worker", version="v1", channel="stable"),
                    window(T0 + 10 * (i + 1), latencies=(5.0, 6.0)),
                ]
                data = MetricsBatch.model_validate(body(*windows))
                web.service.metrics.ingest("shop", data, f"writer-{n}")
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=send, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=60)
    assert failures == []
    api = web.service.metrics.metrics_for("shop", "api", "v2", "canary", since=0)
    assert api.requests == threads * rounds * 3
    assert api.errors == threads * rounds // 2
    assert api.histogram.count == api.requests
    worker = web.service.metrics.metrics_for("shop", "worker", "v1", "stable", since=0)
    assert worker.requests == threads * rounds
