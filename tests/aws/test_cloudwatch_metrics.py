"""CloudWatch metrics as the judge's metrics, on moto: what the Lambda SDK's EMF lines become
in CloudWatch, read back with GetMetricData.

The data goes in as CloudWatch would make it from the EMF documents that
`coalmine.metrics.emf.emf_documents` writes (one PutMetricData datum per
metric of each document: same namespace, dimensions, names and values), so
the provider is tested against what the SDK really writes.

moto 5 answers only Sum, SampleCount, Average, Minimum and Maximum: a
percentile statistic (``p99``) comes back as None, which its own serializer
then fails on. The ``percentiles`` fixture teaches it nearest-rank
percentiles over the stored values, so the requests and answers of the
percentile path still go through botocore as against AWS; the percentile
values themselves are then moto-as-patched's, not CloudWatch's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from coalmine.controller.analysis_settings import MetricsSource, release_analysis
from coalmine.controller.leader import SoleLeadership
from coalmine.controller.loop import Controller
from coalmine.controller.plane import ControlPlane
from coalmine.controller.schemas import AppSpec, FunctionSpec, ReleaseCreate
from coalmine.core.errors import InvalidInput
from coalmine.core.summary import SummarizedMetrics
from coalmine.integrations.cloudwatch_metrics import CloudWatchMetrics, metric_window
from coalmine.metrics.emf import emf_documents
from coalmine.store.db import open_store
from tests.aws import REGION, aws_environment
from tests.controller import NoHooks
from tests.helpers import T0, FakeClock

boto3 = pytest.importorskip("boto3")
moto = pytest.importorskip("moto")

APP = "food-ordering"
M0 = math.floor(T0 / 60) * 60.0
"""a whole minute, where CloudWatch periods start"""


@pytest.fixture
def aws() -> Iterator[Any]:
    with aws_environment(), moto.mock_aws():
        yield boto3.client("cloudwatch", region_name=REGION)


@pytest.fixture
def percentiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto with nearest-rank percentile statistics (see the module docstring)."""
    from moto.cloudwatch.models import Statistics

    plain = Statistics.get_statistics_for_type

    def get(self: Statistics, stat: str) -> Any:
        m = re.fullmatch(r"p(\d+(?:\.\d+)?)", stat)
        if m is None:
            return plain(self, stat)
        values = sorted(self.metric_single_values_list)
        if not values:
            return None
        rank = math.ceil(round(float(m.group(1)) * len(values) / 100, 9))
        return values[max(rank, 1) - 1]

    monkeypatch.setattr(Statistics, "get_statistics_for_type", get)


def put_emf(cw: Any, doc: dict[str, Any]) -> None:
    """What CloudWatch makes of one EMF document: one datum per metric it declares."""
    [directive] = doc["_aws"]["CloudWatchMetrics"]
    [dimension_set] = directive["Dimensions"]
    dimensions = [{"Name": name, "Value": doc[name]} for name in dimension_set]
    at = datetime.fromtimestamp(doc["_aws"]["Timestamp"] / 1000, UTC)
    data = []
    for metric in directive["Metrics"]:
        value = doc[metric["Name"]]
        datum: dict[str, Any] = {
            "MetricName": metric["Name"],
            "Dimensions": dimensions,
            "Timestamp": at,
            "Unit": metric["Unit"],
        }
        datum.update({"Values": value} if isinstance(value, list) else {"Value": value})
        data.append(datum)
    cw.put_metric_data(Namespace=directive["Namespace"], MetricData=data)


def calls(
    cw: Any,
    at: float,
    function: str,
    version: str,
    channel: str,
    latencies: list[float],
    errors: int = 0,
) -> None:
    """One invocation's EMF lines: ``len(latencies)`` calls, ``errors`` of them failed."""
    for doc in emf_documents(
        (APP, function, version, channel),  # type: ignore[arg-type]
        requests=len(latencies),
        errors=errors,
        latencies=latencies,
        timestamp_ms=int(at * 1000),
    ):
        put_emf(cw, doc)


def test_the_window_is_one_period_of_whole_minutes() -> None:
    assert metric_window(M0 + 5, M0 + 65) == (M0, 120)
    assert metric_window(M0, M0) == (M0, 60)
    assert metric_window(M0 + 59, M0 + 60) == (M0, 60)


def test_counts_come_back_exact_in_one_call_and_nothing_else_counts(aws: Any) -> None:
    calls(aws, M0 + 10, "place-order", "v2", "canary", [10.0] * 150, errors=3)  # two EMF lines
    calls(aws, M0 + 70, "place-order", "v2", "canary", [20.0] * 50, errors=2)
    calls(aws, M0 + 10, "place-order", "v1", "stable", [10.0] * 700, errors=7)
    calls(aws, M0 + 10, "place-order", "v1", "canary", [99.0] * 9, errors=9)  # another version
    calls(aws, M0 + 300, "place-order", "v2", "canary", [99.0] * 9, errors=9)  # after the window
    provider = CloudWatchMetrics(quantiles=())  # stock moto: no percentiles
    queries = [
        ("place-order", "v2", "canary"),
        ("place-order", "v1", "stable"),
        ("notify-user", "v1", "canary"),
    ]
    canary, stable, quiet = provider.metrics_for_many(APP, queries, since=M0, until=M0 + 120)
    assert provider.calls == 1
    assert isinstance(canary, SummarizedMetrics)
    assert isinstance(stable, SummarizedMetrics)
    assert (canary.requests, canary.errors, canary.summary.count) == (200, 5, 200)
    assert (stable.requests, stable.errors, stable.summary.count) == (700, 7, 700)
    assert (quiet.requests, quiet.errors) == (0, 0)
    assert canary.key == (APP, "place-order", "v2", "canary")
    assert canary.histogram.count == 0, "CloudWatch gives statistics, never a histogram"
    one = provider.metrics_for(APP, "place-order", "v2", "canary", since=M0, until=M0 + 120)
    assert one.to_dict() == canary.to_dict()
    with pytest.raises(InvalidInput, match="invalid channel 'blue'"):
        provider.metrics_for(APP, "place-order", "v2", "blue", since=M0)


def test_percentiles_come_back_per_quantile(aws: Any, percentiles: None) -> None:
    latencies = [float(i) for i in range(1, 1001)]  # 1..1000 ms
    calls(aws, M0 + 10, "place-order", "v2", "canary", latencies)
    provider = CloudWatchMetrics(quantiles=(0.5, 0.99, 0.999))
    assert provider.statistics == ("p50", "p99", "p99.9")
    got = provider.metrics_for(APP, "place-order", "v2", "canary", since=M0, until=M0 + 60)
    assert isinstance(got, SummarizedMetrics)
    assert got.summary.quantiles == {0.5: 500.0, 0.99: 990.0, 0.999: 999.0}
    assert got.to_dict()["summary"] == {
        "count": 1000,
        "quantiles": {"p50": 500.0, "p99": 990.0, "p99.9": 999.0},
        "source": "CloudWatch",
    }
    empty = provider.metrics_for(APP, "place-order", "v1", "stable", since=M0, until=M0 + 60)
    assert isinstance(empty, SummarizedMetrics)
    assert (empty.summary.count, empty.summary.quantile(0.99)) == (0, None)


def test_the_metrics_source_is_read_from_the_analysis_object() -> None:
    default = release_analysis({"interval": "1m"})
    assert default is not None
    assert (default.source, default.metrics) == (MetricsSource.CONTROL_PLANE, None)
    spec = release_analysis({"metrics": "cloudwatch", "namespace": "shop/coalmine"})
    assert spec is not None
    assert spec.source is MetricsSource.CLOUDWATCH
    assert isinstance(spec.metrics, CloudWatchMetrics)
    assert spec.metrics.namespace == "shop/coalmine"
    assert spec.metrics.statistics == ("p50", "p95", "p99")  # the default latency checks
    tuned = release_analysis(
        {"metrics": {"source": "cloudwatch", "latency_p50": None, "latency_p999": {}}}
    )
    assert tuned is not None
    assert isinstance(tuned.metrics, CloudWatchMetrics)
    assert tuned.metrics.statistics == ("p95", "p99", "p99.9")
    with pytest.raises(InvalidInput) as bad:
        release_analysis({"metrics": "datadog"})
    assert str(bad.value).startswith(
        "analysis: metrics 'datadog' is not a metrics source: use 'cloudwatch'"
    )
    with pytest.raises(InvalidInput, match=r"^analysis: namespace '' must be a CloudWatch"):
        release_analysis({"metrics": "cloudwatch", "namespace": ""})


# -- the analysis step over CloudWatch ---------------------------------------------------


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[tuple[ControlPlane, FakeClock]]:
    clock = FakeClock()
    store = open_store(f"sqlite:///{tmp_path / 'coalmine.db'}")
    yield ControlPlane(store, clock=clock), clock
    store.dispose()


def test_a_release_judged_on_cloudwatch_rolls_back_on_errors_and_passes_latency(
    aws: Any, percentiles: None, plane: tuple[ControlPlane, FakeClock]
) -> None:
    svc, clock = plane
    svc.catalog.apply(
        AppSpec(
            app=APP,
            functions={
                "place-order": FunctionSpec(
                    versions={"v1": "shop.orders:handler", "v2": "shop.orders:handler_v2"},
                    current="v1",
                )
            },
        ),
        "ci",
    )
    analysis = {
        "metrics": "cloudwatch",
        "interval": "1m",
        "min_requests": 100,
        "failure_limit": 2,
    }
    create = {"candidate": {"place-order": "v2"}, "strategy": "10%:1h, 100%", "analysis": analysis}
    release = svc.releases.start(APP, ReleaseCreate.model_validate(create), "ci")
    ctl = Controller(svc, leadership=SoleLeadership(), hooks=NoHooks(), clock=clock)
    ctl.tick()  # started at T0: the window starts here
    latencies = [50.0 + i % 40 for i in range(400)]
    for _minute in range(2):
        at = clock.now + 5
        calls(aws, at, "place-order", "v2", "canary", latencies, errors=40)  # 10% errors
        calls(aws, at, "place-order", "v1", "stable", latencies * 9, errors=36)  # 1%
        clock.advance(60)
        ctl.tick()
    runs = svc.runs.of_release(release.id)
    assert [(r.outcome, r.action) for r in runs] == [("fail", "continue"), ("fail", "rollback")]
    place = runs[-1].results["functions"]["place-order"]
    by_name = {m["name"]: m for m in place["metrics"]}
    assert by_name["error_rate"]["outcome"] == "fail"
    assert by_name["error_rate"]["reason"].startswith(
        "canary errors 10% (80 of 800) vs stable 1% (72 of 7,200), +9 pp, limit +1 pp"
    )
    assert by_name["latency_p99"]["outcome"] == "pass"
    assert by_name["latency_p99"]["reason"] == (
        "canary p99 89.0 ms vs stable 89.0 ms (+0.0%), limit +20% (CloudWatch percentiles)"
    )
    assert svc.releases.get(release.id).phase == "rolled_back"
