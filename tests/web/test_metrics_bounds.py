"""POST /v1/metrics bounds what it stores (SQLite and PostgreSQL): every count and latency of a
window, the sum of a window's batches, the functions and versions (registered ones only) and the
window starts (near the control plane's clock). A batch out of bounds is a 400 naming the window,
the field and the limit, nothing of it is written, and the window still takes good batches."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from coalmine.core.histogram import MAX_COUNT, MAX_LATENCY_MS, VersionMetrics
from coalmine.core.model import Channel
from coalmine.metrics import MAX_WINDOW_AGE, MAX_WINDOW_AHEAD, MetricWindow, batch, window_start
from tests.web.conftest import Web

NOW = window_start(time.time())


def window(
    start: float = NOW,
    *,
    function: str = "api",
    version: str = "v2",
    channel: str = "canary",
    requests: int | None = None,
) -> dict[str, Any]:
    m = VersionMetrics("shop", function, version, Channel(channel))
    m.record(10.0)
    out = MetricWindow(start, m).to_dict()
    if requests is not None:
        out["requests"] = requests
    return out


def post(web: Web, *windows: dict[str, Any], raw: str | None = None) -> Any:
    headers = {**web.as_("deployer"), "Content-Type": "application/json"}
    data = raw if raw is not None else json.dumps(batch("shop", (), 10.0) | {"windows": windows})
    return web.client.post("/v1/metrics", content=data, headers=headers)


def stored(web: Web, function: str = "api", version: str = "v2", channel: str = "canary") -> int:
    return web.service.metrics.metrics_for("shop", function, version, channel, since=0).requests


def test_a_window_adds_up_to_the_bound_and_no_further_and_stays_writable(web: Web) -> None:
    """The issue's overflow: a count near 2^63 (SQLite) or 2^31 (PostgreSQL Integer) made every
    later write of its window a 500. Now the sum is checked: the batch that would pass the bound
    is a 400, and the window keeps taking batches that fit."""
    web.apply()
    r = post(web, window(requests=MAX_COUNT - 2))
    assert r.status_code == 200, r.text
    assert post(web, window(requests=1)).status_code == 200
    assert stored(web) == MAX_COUNT - 1
    r = post(web, window(function="worker", version="v1", channel="stable"), window(requests=2))
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == (
        f"windows[1]: api/v2/canary at {NOW:.0f} would count {MAX_COUNT + 1} requests;"
        f" a window holds at most {MAX_COUNT} (2^53 - 1); nothing was written"
    )
    assert stored(web, "worker", "v1", "stable") == 0  # all or nothing
    assert post(web, window(requests=1)).status_code == 200
    assert stored(web) == MAX_COUNT
    assert post(web, window(NOW - 10, requests=2**31 + 5)).status_code == 200
    assert stored(web) == MAX_COUNT + 2**31 + 5  # a read adds windows up without a bound


BIG: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("requests 2^63", lambda w: w.update(requests=2**63), "requests must be a whole number"),
    ("requests 2^70", lambda w: w.update(requests=2**70), f"from 0 to {MAX_COUNT}"),
    (
        "bin count 2^70",
        lambda w: w["histogram"].update(bins=[[230, 2**70]]),
        f"the count of histogram bin 230 must be a whole number from 1 to {MAX_COUNT}",
    ),
    (
        "zero count 2^64",
        lambda w: w["histogram"].update(zero=2**64),
        f"histogram zero count must be a whole number from 0 to {MAX_COUNT}",
    ),
    (
        "latency 2^70",
        lambda w: w["histogram"].update(max=2.0**70, sum=2.0**70),
        f"histogram max must be from 0 to {MAX_LATENCY_MS:g} ms",
    ),
    (
        "bin index",
        lambda w: w["histogram"].update(bins=[[2**40, 1]]),
        "histogram bin index 1099511627776 is out of range",
    ),
    ("errors 2^64", lambda w: w.update(errors=2**64), "errors must be a whole number"),
]


@pytest.mark.parametrize(("case", "spoil", "message"), BIG, ids=[b[0] for b in BIG])
def test_numbers_beyond_the_bounds_are_a_400_naming_the_field(
    web: Web, case: str, spoil: Callable[[dict[str, Any]], None], message: str
) -> None:
    web.apply()
    bad = window(NOW - 10)
    spoil(bad)
    r = post(web, window(), bad)
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith("windows[1]: ")
    assert message in r.json()["detail"]
    assert stored(web) == 0


@pytest.mark.parametrize(
    ("literal", "status"),
    [("1e400", 400), ("-1e400", 400), ("NaN", 400), ("Infinity", 400), (str(2**70), 400)],
)
def test_non_finite_and_huge_latencies_are_refused(
    sqlite_web: Web, literal: str, status: int
) -> None:
    web = sqlite_web
    web.apply()
    text = json.dumps(batch("shop", (), 10.0) | {"windows": [window()]})
    text = text.replace('"sum": 10.0', f'"sum": {literal}')
    r = post(sqlite_web, raw=text)
    assert r.status_code == status, r.text
    assert r.json()["detail"].startswith("windows[0]: histogram sum")
    assert stored(web) == 0


def test_only_registered_functions_and_versions_of_the_app_are_taken(web: Web) -> None:
    web.apply()
    r = post(
        web,
        window(),
        window(function="worker", version="v2"),  # worker has only v1
        window(function="search", version="v1"),  # no such function
        window(function="search", version="v1", channel="stable"),
    )
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == (
        "app 'shop' has no version worker/v2, search/v1 (windows[1], windows[2]);"
        " register them (coalmine apply) before sending their metrics; nothing was written"
    )
    assert stored(web) == 0
    assert post(web, window(function="worker", version="v1")).status_code == 200
    assert stored(web, "worker", "v1") == 1


def test_window_starts_must_be_near_the_control_planes_clock(web: Web) -> None:
    web.apply()
    oldest = window_start(time.time() - MAX_WINDOW_AGE + 60)
    latest = window_start(time.time() + MAX_WINDOW_AHEAD - 60)
    before = f"more than {MAX_WINDOW_AGE:.0f} s before the control plane's clock"
    after = f"more than {MAX_WINDOW_AHEAD:.0f} s after the control plane's clock"
    for start, said in (
        (1000.0, f"windows[1]: start 1000 is {before}"),
        (1e15, f"windows[1]: start 1000000000000000 is {after}"),
        (window_start(time.time() - MAX_WINDOW_AGE - 60), "windows[1]: start"),
        (window_start(time.time() + MAX_WINDOW_AHEAD + 60), "windows[1]: start"),
    ):
        r = post(web, window(), window(start))
        assert r.status_code == 400, (start, r.text)
        assert r.json()["detail"].startswith(said), r.json()["detail"]
        assert r.json()["detail"].endswith(
            f"windows may start from {MAX_WINDOW_AGE:.0f} s before it"
            f" to {MAX_WINDOW_AHEAD:.0f} s after it"
        )
    assert stored(web) == 0
    assert post(web, window(oldest), window(latest)).status_code == 200
    assert stored(web) == 2
