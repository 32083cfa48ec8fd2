"""CloudWatch metrics for the judge: the per-version EMF metrics, read with GetMetricData.

A Lambda using coalmine's SDK writes EMF lines (`coalmine.metrics.emf`):
metrics ``requests`` and ``errors`` (Count, one value per line) and
``latency`` (Milliseconds, one value per call) in namespace ``coalmine``
(``COALMINE_EMF_NAMESPACE``), with dimensions ``app``, ``function``,
``version``, ``channel``. `CloudWatchMetrics` implements the
`coalmine.core.ports.MetricsProvider` port over them, for teams that do not
send histograms to the control plane (``analysis: {metrics: cloudwatch}``).

For each (function, version, channel) it asks, over one period that spans
the whole window: ``requests`` Sum, ``errors`` Sum, ``latency``
SampleCount, and one ``latency`` percentile per quantile the release's
analysis checks (``p50``, ``p99``, ``p99.9``). All series of an analysis
run go in one GetMetricData call (500 queries a call; more make more calls).
What comes back is a `coalmine.core.summary.SummarizedMetrics`: exact
counts, and percentiles in place of a histogram (see docs/cloudwatch.md for
what the judge can and cannot test from them).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from coalmine.core.errors import InvalidInput
from coalmine.core.histogram import VersionMetrics
from coalmine.core.model import Channel
from coalmine.core.ports import MetricsQuery
from coalmine.core.summary import LatencySummary, SummarizedMetrics, percentile_statistic
from coalmine.integrations.cloudwatch import cloudwatch_client
from coalmine.metrics.emf import DEFAULT_NAMESPACE, DIMENSIONS

__all__ = ["CloudWatchMetrics", "metric_window"]

_QUERIES_PER_CALL = 500  # GetMetricData's limit
_MINUTE = 60


def metric_window(since: float, until: float) -> tuple[int, int]:
    """(start, period) of the one CloudWatch period that covers [since, until): whole
    minutes, at least one (CloudWatch's standard resolution)."""
    start = math.floor(since / _MINUTE) * _MINUTE
    end = max(math.ceil(until / _MINUTE) * _MINUTE, start + _MINUTE)
    return start, end - start


class CloudWatchMetrics:
    """Per-version metrics from CloudWatch (see the module docstring).

    ``client`` is a boto3 CloudWatch client (default: one from the standard
    configuration chain, made on first use); ``quantiles`` the latency
    percentiles to read.
    """

    def __init__(
        self,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        quantiles: Sequence[float] = (0.5, 0.95, 0.99),
        client: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.namespace = namespace
        self.quantiles = tuple(sorted(set(quantiles)))
        self.statistics = tuple(percentile_statistic(q) for q in self.quantiles)
        self._client = client
        self._clock = clock
        self.calls = 0
        """GetMetricData calls made, for tests"""

    def metrics_for(
        self,
        app: str,
        function: str,
        version: str,
        channel: str,
        *,
        since: float,
        until: float | None = None,
    ) -> VersionMetrics:
        return self.metrics_for_many(app, [(function, version, channel)], since=since, until=until)[
            0
        ]

    def metrics_for_many(
        self,
        app: str,
        queries: Sequence[MetricsQuery],
        *,
        since: float,
        until: float | None = None,
    ) -> list[VersionMetrics]:
        """`metrics_for` of each query, in order: `SummarizedMetrics`, read in one call."""
        # validate every key before asking (a bad channel is InvalidInput, as elsewhere)
        keys = [SummarizedMetrics(app, f, v, cast(Channel, c)).key for f, v, c in queries]
        if not keys:
            return []
        start, period = metric_window(since, self._clock() if until is None else until)
        asked = [q for i, key in enumerate(keys) for q in self._queries(i, key, period)]
        values = self._get(asked, start, start + period)
        out: list[VersionMetrics] = []
        for i, (a, f, v, c) in enumerate(keys):
            count = _whole(values, f"n{i}")
            quantiles = {
                q: got
                for j, q in enumerate(self.quantiles)
                if (got := _single(values, f"q{i}_{j}")) is not None
            }
            out.append(
                SummarizedMetrics(
                    a,
                    f,
                    v,
                    c,
                    _whole(values, f"r{i}"),
                    _whole(values, f"e{i}"),
                    summary=LatencySummary(count, quantiles, "CloudWatch"),
                )
            )
        return out

    def _queries(self, i: int, key: tuple[str, ...], period: int) -> list[dict[str, Any]]:
        dimensions = [{"Name": n, "Value": str(v)} for n, v in zip(DIMENSIONS, key, strict=True)]

        def stat(qid: str, metric: str, statistic: str) -> dict[str, Any]:
            return {
                "Id": qid,
                "MetricStat": {
                    "Metric": {
                        "Namespace": self.namespace,
                        "MetricName": metric,
                        "Dimensions": dimensions,
                    },
                    "Period": period,
                    "Stat": statistic,
                },
                "ReturnData": True,
            }

        return [
            stat(f"r{i}", "requests", "Sum"),
            stat(f"e{i}", "errors", "Sum"),
            stat(f"n{i}", "latency", "SampleCount"),
            *(stat(f"q{i}_{j}", "latency", s) for j, s in enumerate(self.statistics)),
        ]

    def _get(self, queries: list[dict[str, Any]], start: int, end: int) -> dict[str, list[float]]:
        if self._client is None:
            self._client = cloudwatch_client()
        values: dict[str, list[float]] = {}
        for k in range(0, len(queries), _QUERIES_PER_CALL):
            kwargs: dict[str, Any] = {
                "MetricDataQueries": queries[k : k + _QUERIES_PER_CALL],
                "StartTime": datetime.fromtimestamp(start, UTC),
                "EndTime": datetime.fromtimestamp(end, UTC),
            }
            while True:
                self.calls += 1
                page = self._client.get_metric_data(**kwargs)
                for result in page.get("MetricDataResults", []):
                    status = result.get("StatusCode", "Complete")
                    if status not in ("Complete", "PartialData"):
                        raise InvalidInput(
                            f"CloudWatch answered {status} for {result.get('Label') or result['Id']}"
                        )
                    values.setdefault(result["Id"], []).extend(
                        float(v) for v in result.get("Values", [])
                    )
                token = page.get("NextToken")
                if not token:
                    break
                kwargs["NextToken"] = token
        return values


def _whole(values: dict[str, list[float]], qid: str) -> int:
    """A count: the Sum (or SampleCount) of every period returned."""
    return round(sum(values.get(qid, ())))


def _single(values: dict[str, list[float]], qid: str) -> float | None:
    """A percentile: the one period's value; None for none, or for several (they do not add)."""
    got = values.get(qid, [])
    return got[0] if len(got) == 1 and math.isfinite(got[0]) else None
