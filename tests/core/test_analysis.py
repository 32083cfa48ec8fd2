"""Analysis settings: defaults, the dict format, and messages that say what to fix."""

from __future__ import annotations

import json
from typing import Any

import pytest

from coalmine.core.analysis import (
    DEFAULT_LATENCY,
    AnalysisSettings,
    CustomCheck,
    ErrorRateCheck,
    InconclusivePolicy,
    LatencyCheck,
    latency_metric_name,
)
from coalmine.core.errors import InvalidInput


def test_defaults() -> None:
    s = AnalysisSettings.parse(None)
    assert s == AnalysisSettings() == AnalysisSettings.parse({})
    # looking every 30 s and rolling back on the first failed look: the sequential tests
    # hold their level over every look, so neither costs false rollbacks any more
    assert (s.interval, s.min_requests, s.failure_limit, s.max_inconclusive) == (30.0, 200, 1, 5)
    assert (s.power, s.max_wait) == (0.9, 3600.0)
    assert s.inconclusive is InconclusivePolicy.PAUSE
    assert s.error_rate == ErrorRateCheck(max_increase_pp=1.0, confidence=0.99)
    assert s.latency == DEFAULT_LATENCY
    assert [c.name for c in s.latency] == ["latency_p50", "latency_p95", "latency_p99"]
    assert all(c.max_increase_pct == 20 and c.confidence == 0.99 for c in s.latency)
    assert s.custom == ()
    assert s.metric_names == ("error_rate", "latency_p50", "latency_p95", "latency_p99")


def test_the_full_format() -> None:
    s = AnalysisSettings.parse(
        {
            "interval": "2m",
            "min_requests": 500,
            "failure_limit": 3,
            "max_inconclusive": 10,
            "inconclusive": "continue",
            "power": 0.95,
            "max_wait": "2h",
            "metrics": {
                "error_rate": {"max_increase_pp": 0.5, "confidence": 0.995},
                "latency_p99": {"max_increase_pct": 30},
                "latency_p999": {"max_increase_pct": 50, "confidence": 0.95},
                "latency_p50": None,
            },
            "custom": [
                {"name": "queue_lag_ms", "max_increase_pct": 10},
                {"name": "cold_starts", "max_increase": 5},
            ],
        }
    )
    assert s.interval == 120.0
    assert (s.min_requests, s.failure_limit, s.max_inconclusive) == (500, 3, 10)
    assert s.inconclusive is InconclusivePolicy.CONTINUE
    assert (s.power, s.max_wait) == (0.95, 7200.0)
    assert s.error_rate == ErrorRateCheck(0.5, 0.995)
    assert s.latency == (
        LatencyCheck(0.95),
        LatencyCheck(0.99, 30),
        LatencyCheck(0.999, 50, 0.95),
    )
    assert s.custom == (
        CustomCheck("queue_lag_ms", max_increase_pct=10),
        CustomCheck("cold_starts", max_increase=5),
    )
    assert s.metric_names[-2:] == ("queue_lag_ms", "cold_starts")


def test_to_dict_round_trips_through_json() -> None:
    for s in (
        AnalysisSettings(),
        AnalysisSettings.parse(
            {
                "interval": 90,
                "metrics": {"error_rate": None, "latency_p95": None, "latency_p90": {}},
                "custom": [{"name": "cost", "max_increase": 0.25}],
            }
        ),
    ):
        assert AnalysisSettings.parse(json.loads(json.dumps(s.to_dict()))) == s
    assert AnalysisSettings().to_dict()["interval"] == "30s"
    assert (AnalysisSettings().to_dict()["power"], AnalysisSettings().to_dict()["max_wait"]) == (
        0.9,
        "1h",
    )


def test_a_settings_object_parses_to_itself() -> None:
    s = AnalysisSettings(min_requests=50)
    assert AnalysisSettings.parse(s) is s


@pytest.mark.parametrize(
    ("quantile", "name"),
    [(0.5, "latency_p50"), (0.99, "latency_p99"), (0.999, "latency_p999"), (0.05, "latency_p05")],
)
def test_latency_metric_names(quantile: float, name: str) -> None:
    assert latency_metric_name(quantile) == name
    assert LatencyCheck(quantile).name == name


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("fast", "analysis settings must be an object"),
        ({"intervall": "1m"}, r"unknown analysis field\(s\) intervall; known fields: interval,"),
        ({"interval": "soon"}, "interval: invalid duration 'soon'"),
        ({"interval": "0s"}, "interval 0s must be from 1s to 24h"),
        ({"interval": "2d"}, "interval: invalid duration"),
        ({"interval": 86401}, "interval 86401s must be from 1s to 24h"),
        ({"min_requests": 0}, "min_requests 0 must be a whole number from 1"),
        ({"min_requests": "200"}, "min_requests '200' must be a whole number"),
        (
            {"failure_limit": 0},
            r"failure_limit 0 must be a whole number from 1 to 1000 \(consecutive",
        ),
        ({"max_inconclusive": -1}, "max_inconclusive -1 must be a whole number from 0"),
        ({"inconclusive": "rollback"}, "inconclusive 'rollback' must be 'pause' or 'continue'"),
        ({"power": 0.3}, "power 0.3 is out of range: use a probability from 0.5 to 0.99"),
        ({"power": "high"}, "power must be a number, got 'high'"),
        ({"max_wait": "soon"}, "max_wait: invalid duration 'soon'"),
        ({"max_wait": "200h"}, "max_wait 200h must be from 0s to 168h"),
        ({"metrics": []}, "metrics must be an object like"),
        ({"metrics": {"latency": {}}}, "unknown metric 'latency': use error_rate or latency_pNN"),
        ({"metrics": {"latency_p9": {}}}, "unknown metric 'latency_p9'"),
        (
            {"metrics": {"latency_p100": {}}},
            r"write metric 'latency_p100' as 'latency_p10' \(quantile 0.1\)",
        ),
        (
            {"metrics": {"latency_p99": {"max_increase": 20}}},
            r"metrics.latency_p99: unknown field\(s\) max_increase; use max_increase_pct, confidence",
        ),
        (
            {"metrics": {"latency_p99": {"max_increase_pct": -5}}},
            "latency_p99.max_increase_pct -5 must be above 0",
        ),
        (
            {"metrics": {"latency_p99": {"confidence": 99}}},
            "latency_p99.confidence 99 is out of range: use a probability from 0.5 to 0.9999",
        ),
        (
            {"metrics": {"latency_p99": "20%"}},
            "metrics.latency_p99 must be an object with max_increase_pct and/or confidence",
        ),
        (
            {"metrics": {"error_rate": {"max_increase_pp": 0}}},
            r"error_rate.max_increase_pp 0 must be above 0 and at most 100 \(percentage points",
        ),
        (
            {"metrics": {"error_rate": {"max_increase_pct": 10}}},
            r"metrics.error_rate: unknown field\(s\) max_increase_pct; use max_increase_pp",
        ),
        (
            {"metrics": {"error_rate": {"confidence": "high"}}},
            "error_rate.confidence must be a number, got 'high'",
        ),
        (
            {
                "metrics": {
                    "error_rate": None,
                    "latency_p50": None,
                    "latency_p95": None,
                    "latency_p99": None,
                }
            },
            "analysis checks nothing",
        ),
        ({"custom": {"name": "x"}}, "custom must be a list like"),
        ({"custom": [{"max_increase": 1}]}, r"custom\[1\] needs a name"),
        ({"custom": [{"name": "Lag", "max_increase": 1}]}, "invalid custom metric name 'Lag'"),
        (
            {"custom": [{"name": "lag"}]},
            "custom metric 'lag': give exactly one of max_increase_pct",
        ),
        (
            {"custom": [{"name": "lag", "max_increase": 1, "max_increase_pct": 1}]},
            "give exactly one of",
        ),
        ({"custom": [{"name": "lag", "max_increase": -1}]}, "lag.max_increase must be >= 0"),
        (
            {"custom": [{"name": "latency_p99", "max_increase": 1}]},
            "is a built-in metric's; configure it under 'metrics'",
        ),
        (
            {"custom": [{"name": "lag", "max_increase": 1}, {"name": "lag", "max_increase": 2}]},
            r"custom metric\(s\) configured twice: lag",
        ),
        ({"custom": [{"name": "lag", "limit": 1}]}, r"custom\[1\]: unknown field\(s\) limit"),
    ],
)
def test_invalid_settings_say_what_to_fix(spec: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        AnalysisSettings.parse(spec)


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(InvalidInput, match="configured twice"):
        AnalysisSettings(latency=(LatencyCheck(0.99), LatencyCheck(0.99, 10)))
    with pytest.raises(InvalidInput, match="interval True must be a number of seconds"):
        AnalysisSettings(interval=True)
    with pytest.raises(InvalidInput, match="must be a whole number from 0 to 10000"):
        AnalysisSettings(max_inconclusive=True)
    with pytest.raises(InvalidInput, match=r"latency quantile 1\.0 must be above 0 and below 1"):
        LatencyCheck(1.0)
    with pytest.raises(InvalidInput, match="at most 4 decimals"):
        LatencyCheck(0.99999)
