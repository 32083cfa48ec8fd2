"""The Grafana dashboard (dashboards/coalmine.json) imports anywhere and asks only for what
coalmine exports.

Its shape is what Grafana's import takes, with the Prometheus data source as a
variable (no data source uid of ours baked in). Every PromQL query in it
(panels and variables) parses, and each metric it names is in an exposition
coalmine really serves: the names are collected from the control plane's and a
gateway's ``/metrics`` with data, not from a list. Then a real Prometheus
scrapes both and every query answers with series, and an alarm on coalmine's
own latency histogram (the query docs/metrics.md shows) reads seconds.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from coalmine.controller.analysis_settings import release_analysis
from coalmine.core.alarms import EvaluationState
from coalmine.core.model import Channel
from coalmine.integrations.prometheus import PrometheusAlarm
from coalmine.metrics.exposition import DEFAULT_BUCKETS_SECONDS, DEPRECATED_ENV
from tests.controller.prometheus import PrometheusServer, prometheus_binary
from tests.metrics.served import sample_names, serving

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboards" / "coalmine.json"
DOC = ROOT / "docs" / "metrics.md"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
_DURATION = re.compile(
    r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}"
)
_VARIABLE = re.compile(r"\$\{\w+(:\w+)?\}|\$\w+|\[\[\w+\]\]")
YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)
_LABEL_VALUES = re.compile(r"label_values\((.*),\s*(\w+)\)", re.S)


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    out = []
    for panel in board["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """``(where, PromQL)`` of every panel target and every query variable (its selector)."""
    out = []
    for panel in panels(board):
        for t in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} {t['refId']}", t["expr"]))
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            found = _LABEL_VALUES.fullmatch(query.strip())
            assert found, f"variable {var['name']}: use label_values(<selector>, <label>)"
            out.append((f"variable {var['name']}", found.group(1)))
    return out


def concrete(expr: str, duration: str = "5m", value: str = ".+") -> str:
    """The query as Prometheus gets it from Grafana, its variables given values."""
    return _VARIABLE.sub(value, _DURATION.sub(duration, expr))


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects; a selector must name its metric."""
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name or next(
                (
                    m.value
                    for m in node.matchers.matchers
                    if m.name == "__name__" and m.op == promql_parser.MatchOp.Equal
                ),
                None,
            )
            assert name, f"a selector that names no metric: {node}"
            names.add(name)

    promql_parser.walk(promql_parser.parse(expr), pre_visit=visit)
    return names


def test_the_dashboard_is_what_grafana_imports_with_a_prometheus_datasource_variable() -> None:
    board = dashboard()
    assert board["uid"] == "coalmine-releases"
    assert board["title"]
    assert isinstance(board["schemaVersion"], int)
    assert board.get("id") is None  # Grafana gives its own id on import
    variables = board["templating"]["list"]
    sources = [v for v in variables if v["type"] == "datasource"]
    assert [(v["name"], v["query"]) for v in sources] == [("datasource", "prometheus")]
    for var in variables:
        if var["type"] == "query":
            assert var["datasource"] == DATASOURCE, var["name"]
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    for panel in panels(board):
        grid = panel["gridPos"]
        assert 0 <= grid["x"] < grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs, panel["title"]
        assert len(refs) == len(set(refs)), panel["title"]
        for t in panel["targets"]:
            assert t["datasource"] == DATASOURCE, panel["title"]
    # no data source of our own machine baked in: every reference is the variable
    text = DASHBOARD.read_text(encoding="utf-8")
    assert sorted(set(re.findall(r'"uid": "([^"]*)"', text))) == [
        "${datasource}",
        "coalmine-releases",
    ]
    # what the issue asks to see: per-version rates, errors, quantiles; exposure; verdicts
    everything = " ".join(expr for _, expr in queries(board))
    for name in (
        "coalmine_requests_total",
        "coalmine_errors_total",
        "coalmine_request_duration_seconds_bucket",
        "coalmine_release_exposure_ratio",
        "coalmine_release_verdict",
        "coalmine_analysis_runs_total",
    ):
        assert name in everything, name
    assert "histogram_quantile(0.99," in everything


def test_metric_names_of_a_query_are_found_in_any_form() -> None:
    expr = 'sum(rate(a_total{x="1"}[$__rate_interval])) / on () b + c offset 1m + {__name__="d"}'
    assert metric_names(concrete(expr)) == {"a_total", "b", "c", "d"}
    with pytest.raises(AssertionError, match="names no metric"):
        metric_names('{__name__=~"coalmine_.*"}')
    with pytest.raises(ValueError, match="unexpected"):
        metric_names("rate(x[$__rate_interval])")  # Grafana's variables must be given values


async def test_every_query_names_metrics_coalmine_exports(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DEPRECATED_ENV, raising=False)
    async with serving(sqlite_url, monkeypatch) as served:
        texts = await served.scrape()
    exported = set().union(*(sample_names(text) for text in texts.values()))
    assert "coalmine_release_verdict" in exported  # the control plane's
    assert "coalmine_gateway_tokens_rejected_total" in exported  # the gateway's
    found = queries(dashboard())
    assert len(found) >= 10
    for where, expr in found:
        names = metric_names(concrete(expr))
        assert names, where
        assert names <= exported, f"{where} names what coalmine does not export: {names - exported}"


def doc_alarm(prometheus: str) -> PrometheusAlarm:
    """The alarm on coalmine's own histogram that docs/metrics.md shows, read as coalmine
    reads a release's settings, pointed at ``prometheus``."""
    for block in YAML_BLOCK.findall(DOC.read_text(encoding="utf-8")):
        doc = yaml.safe_load(block)
        alarms = doc.get("release", {}).get("analysis", {}).get("alarms", [])
        for alarm in alarms:
            if "coalmine_request_duration_seconds" in alarm.get("query", ""):
                spec = release_analysis({**doc["release"]["analysis"]})
                assert spec is not None
                assert [a.name for a in spec.alarms] == [alarm["name"]]
                return PrometheusAlarm.from_spec({**alarm, "prometheus": prometheus})
    raise AssertionError("docs/metrics.md shows no alarm on coalmine_request_duration_seconds")


@pytest.mark.slow
async def test_every_query_answers_from_a_real_prometheus(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    prometheus_binary()  # skips (or fails when services are required) without Prometheus
    monkeypatch.delenv(DEPRECATED_ENV, raising=False)
    async with serving(sqlite_url, monkeypatch) as served:
        server = PrometheusServer(
            tmp_path,
            [served.control_plane_target, served.gateway_target],
            credentials=served.scraper,
        )
        try:
            await asyncio.to_thread(server.start)
            await _wait(server, 'count(up{job="coalmine-test"} == 1) == 2', "both targets up")
            gateway = f'instance="{served.gateway_target}"'
            await _wait(
                server, f"count(coalmine_requests_total{{{gateway}}}) > 0", "a first scrape"
            )
            await served.traffic()  # calls between two scrapes: every rate moves
            canary_p99 = (
                "histogram_quantile(0.99, sum by (le)"
                f' (rate(coalmine_request_duration_seconds_bucket{{{gateway}, channel="canary"}}[1m])))'
            )
            await _wait(server, f"{canary_p99} > 0", "a canary latency from rates")
            # each target scraped twice at least (a rate, an increase need two samples)
            twice = "count(count_over_time(coalmine_metrics_evicted_series_total[1m]) >= 2) == 2"
            await _wait(server, twice, "two scrapes of each target")
            for where, expr in queries(dashboard()):
                got = await asyncio.to_thread(server.query, concrete(expr, duration="1m"))
                assert got, f"{where}: no series from Prometheus for {concrete(expr, '1m')}"

            # the alarm of docs/metrics.md reads coalmine's histogram in seconds
            alarm = doc_alarm(server.url)
            assert alarm.above == 0.5
            evaluation = await asyncio.to_thread(alarm.evaluate)
            p99 = evaluation.value
            assert p99 is not None, evaluation.detail
            assert math.isfinite(p99)
            fires = EvaluationState.FIRING if p99 > 0.5 else EvaluationState.OK
            assert evaluation.state is fires, evaluation.detail
            # in seconds: at most the bound of the bucket that holds the slowest canary call
            slowest_ms = max(
                m.histogram.max
                for m in served.gateway.recorder.totals()
                if m.channel is Channel.CANARY
            )
            bound = next(b for b in DEFAULT_BUCKETS_SECONDS if b >= slowest_ms * 1.01 / 1000)
            assert 0 < p99 <= bound, (p99, slowest_ms)
        finally:
            await asyncio.to_thread(server.stop)


async def _wait(server: PrometheusServer, promql: str, what: str, timeout: float = 60) -> None:
    """Poll Prometheus until ``promql`` has a sample (it scrapes every second)."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(server.query, promql):
        if time.monotonic() > deadline:
            pytest.fail(f"Prometheus: no {what} ({promql}) within {timeout}s")
        await asyncio.sleep(0.2)
