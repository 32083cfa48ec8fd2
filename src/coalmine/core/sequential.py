"""What the judge carries from one look to the next: each metric's test and where it left off.

The judge is handed cumulative windows (everything each channel served since
the release started); its sequential tests (`coalmine.core.stats.RateTest`)
need each look's *increment*. A `MetricState` holds one metric's test and
the cumulative counts its last look saw (``seen``), so the next increment is
the difference: data that arrives late for an old window counts in the next
look, and nothing is counted twice.

For a latency quantile the events are *exceedances*: requests slower than a
threshold bucket. From the second look on, the threshold is the bucket of
stable's quantile as of the previous look: chosen before the increment's
data, so the test stays valid (a threshold that moves with the data it
judges would not be). At the first look it is the bucket of the quantile of
both channels pooled: a function of the pooled values alone, so if the
canary is no different every labelling of them is equally likely and its
count above the threshold is exactly hypergeometric.

`JudgeState` maps metric names to their states; the controller stores it
with each analysis run (`to_dict`) and hands it back at the next look.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from coalmine.core.errors import InvalidInput
from coalmine.core.histogram import LatencyHistogram
from coalmine.core.stats import RateTest

__all__ = ["Increment", "JudgeState", "MetricState", "error_look", "exceedance_look"]

Counts = tuple[int, int, int, int]
"""(canary events, canary trials, stable events, stable trials)"""


@dataclass(frozen=True, slots=True)
class Increment:
    """What one look added: events and trials of each channel since the previous look."""

    canary_events: int
    canary_trials: int
    stable_events: int
    stable_trials: int

    @property
    def canary_share(self) -> float | None:
        """The canary's share of the trials, or None when a side had none."""
        if not self.canary_trials or not self.stable_trials:
            return None
        return self.canary_trials / (self.canary_trials + self.stable_trials)


@dataclass(frozen=True, slots=True)
class MetricState:
    """One metric's test and the cumulative counts its last look saw."""

    test: RateTest
    seen: Counts
    threshold: int | None = None
    """latency: the bucket whose exceedances the next look counts (None: the zero bucket)"""

    def to_dict(self) -> dict[str, Any]:
        return {"test": self.test.to_dict(), "seen": list(self.seen), "threshold": self.threshold}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricState:
        if not isinstance(data, Mapping):
            raise InvalidInput("a metric state must be an object")
        seen = data.get("seen")
        threshold = data.get("threshold")
        if (
            not isinstance(seen, list)
            or len(seen) != 4
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in seen)
            or seen[0] > seen[1]
            or seen[2] > seen[3]
        ):
            raise InvalidInput("a metric state's seen must be 4 whole counts, events <= trials")
        if threshold is not None and (
            isinstance(threshold, bool) or not isinstance(threshold, int)
        ):
            raise InvalidInput("a metric state's threshold must be a bucket index or null")
        return cls(
            RateTest.from_dict(data.get("test", {})),
            (seen[0], seen[1], seen[2], seen[3]),
            threshold,
        )


@dataclass(frozen=True, slots=True)
class JudgeState:
    """Every tested metric's state after a look: what the next look continues from."""

    metrics: Mapping[str, MetricState] = field(default_factory=dict)

    def get(self, name: str) -> MetricState | None:
        return self.metrics.get(name)

    def to_dict(self) -> dict[str, Any]:
        return {name: state.to_dict() for name, state in self.metrics.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JudgeState:
        """Read a stored state back (validated: it comes from the store)."""
        if not isinstance(data, Mapping):
            raise InvalidInput("a judge state must be an object")
        return cls({str(name): MetricState.from_dict(item) for name, item in data.items()})


def _step(before: int, now: int) -> int:
    return max(0, now - before)


def _increment(seen: Counts, now: Counts) -> Increment:
    """``now - seen`` per count, never negative and events never above trials (counts only
    shrink when windows are deleted: such a look adds nothing)."""
    canary_trials = _step(seen[1], now[1])
    stable_trials = _step(seen[3], now[3])
    return Increment(
        min(_step(seen[0], now[0]), canary_trials),
        canary_trials,
        min(_step(seen[2], now[2]), stable_trials),
        stable_trials,
    )


def _observe(test: RateTest, inc: Increment) -> RateTest:
    return test.observe(inc.canary_events, inc.canary_trials, inc.stable_events, inc.stable_trials)


def error_look(
    state: MetricState | None,
    canary_errors: int,
    canary_requests: int,
    stable_errors: int,
    stable_requests: int,
) -> tuple[MetricState, Increment]:
    """The error-rate test after a look at these cumulative counts, and the increment."""
    now = (canary_errors, canary_requests, stable_errors, stable_requests)
    before = state if state is not None else MetricState(RateTest(), (0, 0, 0, 0))
    inc = _increment(before.seen, now)
    return MetricState(_observe(before.test, inc), now), inc


def _counts(canary: LatencyHistogram, stable: LatencyHistogram, bucket: int | None) -> Counts:
    return (
        canary.count_above_bucket(bucket),
        canary.count,
        stable.count_above_bucket(bucket),
        stable.count,
    )


def exceedance_look(
    state: MetricState | None, quantile: float, canary: LatencyHistogram, stable: LatencyHistogram
) -> tuple[MetricState, Increment]:
    """The test of one latency quantile after a look at these cumulative histograms, and
    the increment (exceedances of the threshold the previous look chose)."""
    if state is None:
        if not canary.count and not stable.count:
            return MetricState(RateTest(), (0, 0, 0, 0)), Increment(0, 0, 0, 0)
        pooled = stable.copy()
        pooled.merge(canary)
        first = pooled.quantile_bucket(quantile)
        inc = _increment((0, 0, 0, 0), _counts(canary, stable, first))
        test = _observe(RateTest(), inc)
        threshold = first
    else:
        inc = _increment(state.seen, _counts(canary, stable, state.threshold))
        test = _observe(state.test, inc)
        threshold = state.threshold
    if stable.count:
        threshold = stable.quantile_bucket(quantile)
    return MetricState(test, _counts(canary, stable, threshold), threshold), inc
