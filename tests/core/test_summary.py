"""Metrics from a statistics store (CloudWatch): exact counts, one percentile per side, and
what the judge makes of them."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalmine.core.analysis import AnalysisSettings
from coalmine.core.errors import InvalidInput
from coalmine.core.histogram import VersionMetrics
from coalmine.core.judge import Outcome, judge
from coalmine.core.model import Channel
from coalmine.core.summary import LatencySummary, SummarizedMetrics, percentile_statistic

ONLY_P99 = AnalysisSettings.parse(
    {"min_requests": 100, "metrics": {"latency_p50": None, "latency_p95": None}}
)


def side(
    channel: str, requests: int, errors: int, p99: float | None, count: int | None = None
) -> SummarizedMetrics:
    quantiles = {} if p99 is None else {0.99: p99}
    return SummarizedMetrics(
        "shop",
        "place-order",
        "v2" if channel == "canary" else "v1",
        Channel(channel),
        requests,
        errors,
        summary=LatencySummary(requests if count is None else count, quantiles),
    )


@pytest.mark.parametrize(
    ("quantile", "name"),
    [(0.5, "p50"), (0.95, "p95"), (0.99, "p99"), (0.999, "p99.9"), (0.9999, "p99.99")],
)
def test_quantiles_are_named_as_cloudwatch_statistics(quantile: float, name: str) -> None:
    assert percentile_statistic(quantile) == name


def test_bad_statistics_are_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="above 0 and below 1"):
        percentile_statistic(1.0)
    with pytest.raises(InvalidInput, match="whole number >= 0"):
        LatencySummary(-1)
    with pytest.raises(InvalidInput, match=r"percentile 0\.99 must be a finite number"):
        LatencySummary(10, {0.99: math.nan})
    with pytest.raises(InvalidInput, match="cannot exceed requests"):
        side("canary", 10, 11, 5.0)


def test_percentiles_of_two_windows_do_not_merge() -> None:
    a = side("canary", 500, 5, 120.0)
    with pytest.raises(InvalidInput, match="percentiles do not add up"):
        a.merge(a.copy())
    copy = a.copy()
    assert isinstance(copy, SummarizedMetrics)
    assert copy.to_dict() == a.to_dict()
    assert a.to_dict()["summary"] == {
        "count": 500,
        "quantiles": {"p99": 120.0},
        "source": "CloudWatch",
    }


def test_a_p99_within_the_limit_passes_and_beyond_it_is_inconclusive_never_a_failure() -> None:
    stable = side("stable", 9000, 90, 100.0)
    ok = judge(side("canary", 1000, 10, 115.0), stable, ONLY_P99)
    assert ok.outcome is Outcome.PASS
    assert ok.metric("latency_p99").reason == (
        "canary p99 115 ms vs stable 100 ms (+15%), limit +20% (CloudWatch percentiles)"
    )
    slow = judge(side("canary", 1000, 10, 300.0), stable, ONLY_P99)
    assert slow.outcome is Outcome.INCONCLUSIVE
    assert slow.metric("latency_p99").reason == (
        "canary p99 300 ms vs stable 100 ms (+200%), limit +20% (CloudWatch percentiles);"
        " CloudWatch gives one p99 per side, not the distributions: no test can say the"
        " difference is real, so it cannot fail the canary"
    )
    assert slow.metric("latency_p99").change == pytest.approx(200.0)


def test_missing_percentiles_and_few_latencies_are_inconclusive() -> None:
    stable = side("stable", 9000, 90, 100.0)
    none = judge(side("canary", 1000, 10, None), stable, ONLY_P99)
    assert none.metric("latency_p99").reason == "CloudWatch gave no p99 (canary None, stable 100.0)"
    few = judge(side("canary", 1000, 10, 100.0, count=50), stable, ONLY_P99)
    assert few.metric("latency_p99").reason == (
        "too few latency measurements for p99 (canary 50, stable 9,000, need 100 each)"
    )
    assert {none.outcome, few.outcome} == {Outcome.INCONCLUSIVE}


def test_canary_and_stable_must_come_from_one_source() -> None:
    histogram = VersionMetrics("shop", "place-order", "v1", Channel.STABLE, 9000, 90)
    with pytest.raises(InvalidInput, match="must come from one source"):
        judge(side("canary", 1000, 10, 100.0), histogram, ONLY_P99)


counts = st.integers(min_value=0, max_value=20_000)


@settings(deadline=None)  # each example judges twice: a few ms on a loaded machine
@given(counts, counts, counts, counts)
def test_the_error_rate_is_judged_the_same_from_counts_as_from_histograms(
    cr: int, ce: int, sr: int, se: int
) -> None:
    ce, se = min(ce, cr), min(se, sr)
    analysis = AnalysisSettings(min_requests=1, latency=())
    from_counts = judge(side("canary", cr, ce, None), side("stable", sr, se, None), analysis)
    from_histograms = judge(
        VersionMetrics("shop", "place-order", "v2", Channel.CANARY, cr, ce),
        VersionMetrics("shop", "place-order", "v1", Channel.STABLE, sr, se),
        analysis,
    )
    assert from_counts.to_dict() == from_histograms.to_dict()


positive = st.floats(min_value=0.001, max_value=1e6, allow_nan=False)


@settings(deadline=None)
@given(positive, positive, st.integers(min_value=100, max_value=10**6))
def test_latency_from_percentiles_never_fails_a_canary(
    canary: float, stable: float, n: int
) -> None:
    got = judge(side("canary", n, 0, canary), side("stable", n, 0, stable), ONLY_P99)
    result = got.metric("latency_p99")
    assert result.outcome is not Outcome.FAIL
    if not math.isclose(canary / stable, 1.2):  # at the limit, rounding decides
        assert (result.outcome is Outcome.PASS) == (canary / stable <= 1.2)
