"""Latency as a statistics store reports it: a sample count and a few percentiles, no distribution.

CloudWatch keeps a metric's statistics (``Sum``, ``SampleCount``, percentiles
such as ``p99``) for any period asked, but gives no histogram back. Counts
add up exactly, so the error rate is as good as from histograms; a
percentile is one number per side, so the judge can say whether the canary's
p99 is within the limit of stable's, but no test on the two distributions
can say that a larger difference is real (`coalmine.core.judge` treats it as
inconclusive).

`SummarizedMetrics` is a `VersionMetrics` whose latency is a
`LatencySummary` (its histogram stays empty): the `MetricsProvider` over
CloudWatch (`coalmine.integrations.cloudwatch_metrics`) returns them.
Percentiles of two windows do not merge, so neither do these.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from coalmine.core.errors import InvalidInput
from coalmine.core.histogram import VersionMetrics

__all__ = ["LatencySummary", "SummarizedMetrics", "percentile_statistic"]


def percentile_statistic(quantile: float) -> str:
    """CloudWatch's name of a quantile's statistic: ``0.99`` -> ``p99``, ``0.999`` -> ``p99.9``."""
    if isinstance(quantile, bool) or not isinstance(quantile, int | float) or not 0 < quantile < 1:
        raise InvalidInput(f"a quantile must be above 0 and below 1, got {quantile!r}")
    text = format(Decimal(repr(float(quantile))) * 100, "f")
    return "p" + (text.rstrip("0").rstrip(".") if "." in text else text)


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """How many latencies a window holds and some of their percentiles (milliseconds)."""

    count: int = 0
    quantiles: Mapping[float, float] = field(default_factory=dict)
    """quantile (0.99) -> value in milliseconds, for the percentiles the store computed"""
    source: str = "CloudWatch"
    """where the statistics come from, for the judge's sentences"""

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 0:
            raise InvalidInput(f"a latency count must be a whole number >= 0, got {self.count!r}")
        for q, v in self.quantiles.items():
            percentile_statistic(q)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise InvalidInput(f"percentile {q:g} must be a finite number, got {v!r}")
            if v < 0:
                raise InvalidInput(f"percentile {q:g} cannot be negative, got {v!r}")
        object.__setattr__(self, "quantiles", dict(self.quantiles))

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile, or None when the store gave none (no data, or not asked)."""
        return self.quantiles.get(q) if self.count else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "quantiles": {percentile_statistic(q): v for q, v in sorted(self.quantiles.items())},
            "source": self.source,
        }


@dataclass(eq=False, slots=True)
class SummarizedMetrics(VersionMetrics):
    """Requests and errors (exact counts) and a `LatencySummary` of one version in one channel."""

    summary: LatencySummary = field(default_factory=LatencySummary)

    def __post_init__(self) -> None:
        VersionMetrics.__post_init__(self)
        if not isinstance(self.summary, LatencySummary):
            raise InvalidInput("summary must be a LatencySummary")

    def merge(self, other: VersionMetrics) -> None:
        raise InvalidInput(
            f"cannot merge {self.summary.source} statistics of two windows: percentiles do not"
            " add up; read the whole window at once"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**VersionMetrics.to_dict(self), "summary": self.summary.to_dict()}
