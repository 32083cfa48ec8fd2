"""The dashboard's HTML over TestClient: a public shell with no data, token-only fragments,
the release page's parts, and every stored value escaped."""

from __future__ import annotations

import random
import re
import time

from coalmine.core.histogram import VersionMetrics
from coalmine.core.machine import Tick
from coalmine.core.model import Channel
from coalmine.core.tracker import Action
from coalmine.core.verdict import MetricResult, Outcome, Verdict
from coalmine.metrics import MetricWindow, batch, window_start
from tests.web.conftest import Web

_SCRIPT = "<script>alert('x')</script>"


def _start(web: Web) -> str:
    rid = web.start_release()
    assert web.service.releases.advance(rid, Tick(time.time() + 1e6)) is not None
    return rid


def test_the_shell_is_public_holds_no_data_and_locks_scripts_to_the_origin(
    sqlite_web: Web,
) -> None:
    rid = _start(sqlite_web)
    r = sqlite_web.client.get("/ui")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "shop" not in r.text
    assert rid not in r.text
    assert '<script src="/ui/ui.js" defer></script>' in r.text
    assert "<script>" not in r.text  # no inline script: the CSP forbids them
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "default-src 'none'" in csp
    js = sqlite_web.client.get("/ui/ui.js")
    assert js.status_code == 200
    assert js.headers["content-type"].startswith("text/javascript")
    assert "sessionStorage" in js.text
    # live over the app's routing stream, read with the token in a header (never a URL)
    assert "/routing/stream'" in js.text
    assert "Authorization: 'Bearer ' + token()" in js.text
    assert "new EventSource" not in js.text
    assert "?token=" not in js.text
    assert sqlite_web.client.get("/ui/ui.css").status_code == 200
    assert "/ui" not in str(
        sqlite_web.client.get("/openapi.json", headers=sqlite_web.as_("viewer")).json()["paths"]
    )


def test_fragments_need_a_viewer_token(sqlite_web: Web) -> None:
    rid = _start(sqlite_web)
    c = sqlite_web.client
    for path in ("/ui/fragments/apps", f"/ui/fragments/releases/{rid}"):
        anonymous = c.get(path)
        assert anonymous.status_code == 401
        assert "shop" not in anonymous.text
        assert c.get(path, headers={"Authorization": "Bearer cm_nope"}).status_code == 401
        assert c.get(path, headers=sqlite_web.as_("viewer")).status_code == 200
    sdk = {"Authorization": f"Bearer {sqlite_web.sdk_key('shop')}"}
    assert c.get("/ui/fragments/apps", headers=sdk).status_code == 403
    assert c.get("/ui/fragments/releases/nope", headers=sqlite_web.as_("viewer")).status_code == 404


def test_apps_fragment_lists_apps_and_active_releases(sqlite_web: Web) -> None:
    rid = _start(sqlite_web)
    html = sqlite_web.client.get("/ui/fragments/apps", headers=sqlite_web.as_("viewer")).text
    assert '<td class="name">shop</td>' in html
    assert "api=v1" in html
    assert "worker=v1" in html
    assert f'href="#/releases/{rid}"' in html
    assert '<span class="phase running">running</span> 10%' in html


def test_release_fragment_shows_plan_chart_buttons_and_timeline(sqlite_web: Web) -> None:
    rid = _start(sqlite_web)
    c, view = sqlite_web.client, sqlite_web.as_("viewer")
    html = c.get(f"/ui/fragments/releases/{rid}", headers=view).text
    assert f'data-release="{rid}" data-app="shop" data-phase="running"' in html
    assert '<b class="exposure">10%</b>, step 1 of 10' in html
    assert html.count('class="step ') == 10
    assert '<li class="step current" data-step="0">10% for 60s</li>' in html
    # one point per event with an exposure, and the present
    points = re.search(r'class="line" d="[^"]*" data-points="(\d+)"', html)
    assert points is not None
    assert int(points.group(1)) >= 2
    for op in ("promote", "rollback", "pause", "resume"):
        assert f'data-op="{op}" data-release="{rid}"' in html
    assert "api: v1 &rarr; v2" in html
    assert "<b>started</b>" in html

    r = c.post(
        f"/v1/releases/{rid}/rollback",
        json={"reason": "p99 up"},
        headers=sqlite_web.as_("deployer"),
    )
    assert r.status_code == 200
    html = c.get(f"/ui/fragments/releases/{rid}", headers=view).text
    assert 'data-phase="rolled_back"' in html or 'data-phase="rolling_back"' in html
    assert re.search(r'<li class="event rolling_back alert">', html)
    assert '<g class="marker rollback">' in html


def test_every_stored_value_is_escaped(sqlite_web: Web) -> None:
    rid = _start(sqlite_web)
    c = sqlite_web.client
    r = c.post(
        f"/v1/releases/{rid}/rollback", json={"reason": _SCRIPT}, headers=sqlite_web.as_("deployer")
    )
    assert r.status_code == 200, r.text
    html = c.get(f"/ui/fragments/releases/{rid}", headers=sqlite_web.as_("viewer")).text
    assert "<script" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html


def _record_run(web: Web, rid: str, at: float, canary_p99: float, reason: str) -> None:
    metrics = (
        MetricResult("error_rate", Outcome.PASS, "errors as low", 0.5, 0.4, 0.1, 1.0, "pp", 0.3),
        MetricResult("latency_p99", Outcome.FAIL, reason, canary_p99, 100.0, 50.0, 20.0, "%"),
    )
    verdict = Verdict(Outcome.FAIL, metrics, (reason,), (), 120, 1000)
    web.service.runs.record(
        rid,
        window_start=at - 60,
        window_end=at,
        outcome=Outcome.FAIL,
        action=Action.CONTINUE,
        results={"functions": {"api": verdict.to_dict()}},
        message="analysis",
        at=at,
    )


def test_judge_table_and_metric_charts_come_from_the_analysis_runs(sqlite_web: Web) -> None:
    rid = _start(sqlite_web)
    now = time.time()
    _record_run(sqlite_web, rid, now - 60, 140.0, "p99 up 40%")
    _record_run(sqlite_web, rid, now, 150.0, _SCRIPT)
    html = sqlite_web.client.get(
        f"/ui/fragments/releases/{rid}", headers=sqlite_web.as_("viewer")
    ).text
    table = html[html.index('<table class="judge">') :]
    assert table.count('<tr class="fail">') == 2
    assert table.count('<tr class="pass">') == 2
    assert (
        "<td>api</td><td>latency_p99</td><td>150</td><td>100</td><td>50%</td><td>20%</td>" in html
    )
    assert "<td>0.1pp</td><td>1pp</td><td>0.3</td><td>pass</td>" in html
    assert "<script" not in html
    assert "&lt;script&gt;" in html
    assert "api: latency_p99" in html
    assert "api: error_rate" in html
    assert html.count('class="line canary" points=') == 2
    assert re.search(r'class="line canary" points="[^"]*" data-points="2"', html)


def _windows(web: Web, at: float, version: str, channel: str, latencies: list[float]) -> None:
    m = VersionMetrics("shop", "api", version, Channel(channel))
    for i, latency in enumerate(latencies):
        m.record(latency, error=i == 0)
    r = web.client.post(
        "/v1/metrics",
        json=batch("shop", [MetricWindow(window_start(at), m)], 10.0),
        headers={"Authorization": f"Bearer {web.sdk_key('shop')}"},
    )
    assert r.status_code == 200, r.text


def test_the_chain_and_per_version_quantiles_over_time(sqlite_web: Web) -> None:
    rid = _start(sqlite_web)
    c, view = sqlite_web.client, sqlite_web.as_("viewer")
    now = time.time()
    for at in (now - 10, now):
        _windows(sqlite_web, at, "v2", "canary", [float(v) for v in range(1, 101)])
        _windows(sqlite_web, at, "v1", "stable", [5.0] * 50)
    html = c.get(f"/ui/fragments/releases/{rid}", headers=view).text
    chain = html[html.index('<table class="chain">') :]
    chain = chain[: chain.index("</table>")]
    assert (
        '<tr class="function changed" data-function="api"><td>api</td>'
        '<td class="stable">v1</td><td class="canary">v2</td></tr>'
    ) in chain
    assert '<tr class="function" data-function="worker"><td>worker</td>' in chain
    charts = html[html.index('<div class="function-charts" data-function="api">') :]
    assert "api: error rate" in charts
    assert "api: latency p50 / p95 / p99" in charts
    for side in ("canary", "stable"):
        for q in ("p50", "p95", "p99"):
            points = re.search(
                rf'class="line {side} {q}" points="([^"]*)" data-points="(\d+)"', html
            )
            assert points is not None, (side, q)
            assert int(points.group(2)) >= 1
    canary_p99 = re.search(r'<text class="legend canary p99"[^>]*>canary v2 p99</text>', html)
    assert canary_p99 is not None
    # the highest latency drawn is the canary's p99 (about 99 ms), not the stable's 5 ms
    top = re.search(
        r'<title>api: latency p50 / p95 / p99</title>.*?<text class="tick" x="2" y="16">([\d.]+)ms',
        html,
    )
    assert top is not None
    assert 90 <= float(top.group(1)) <= 110

    assert (
        c.post(
            f"/v1/releases/{rid}/rollback",
            json={"reason": "p99"},
            headers=sqlite_web.as_("deployer"),
        ).status_code
        == 200
    )
    html = c.get(f"/ui/fragments/releases/{rid}", headers=view).text
    assert '<td class="stable">v1</td><td class="canary">v1</td>' in html  # canary sent back


def test_over_time_merges_each_span_as_metrics_for_does(sqlite_web: Web) -> None:
    sqlite_web.apply()
    rng = random.Random(7)
    t0 = window_start(time.time() - 600)
    windows = []
    for i in range(12):
        m = VersionMetrics("shop", "api", "v2", Channel.CANARY)
        for _ in range(rng.randrange(1, 300)):
            m.record(rng.lognormvariate(3, 1.2), error=rng.random() < 0.05)
        windows.append(MetricWindow(t0 + 10 * i, m))
    r = sqlite_web.client.post(
        "/v1/metrics", json=batch("shop", windows, 10.0), headers=sqlite_web.as_("deployer")
    )
    assert r.status_code == 200, r.text
    metrics = sqlite_web.service.metrics
    query = [("api", "v2", "canary")]
    (spans,) = metrics.over_time("shop", query, since=t0, until=t0 + 120, bins=4)
    assert [at for at, _ in spans] == [t0, t0 + 30, t0 + 60, t0 + 90]
    for at, got in spans:
        want = metrics.metrics_for("shop", "api", "v2", "canary", since=at, until=at + 30)
        assert (got.requests, got.errors) == (want.requests, want.errors)
        assert got.histogram.to_dict() == want.histogram.to_dict()
        assert got.histogram.quantile(0.99) == want.histogram.quantile(0.99)
    assert sum(m.requests for _, m in spans) == sum(w.metrics.requests for w in windows)
