"""Latency as a mergeable, log-bucketed histogram, and per-version request counters.

`LatencyHistogram` is a DDSketch-style sketch (Masson, Rim & Lee, VLDB 2019):
a value ``x`` goes to bucket ``ceil(log_gamma(x))`` with
``gamma = (1 + alpha) / (1 - alpha)``, so every bucket spans a factor of
``gamma`` and its representative ``2 gamma^i / (gamma + 1)`` is within
``alpha`` (1% by default) of every value in it. A quantile is therefore within
1% of the true quantile, whatever the distribution, with a few hundred
buckets for any realistic latency range.

Memory is bounded (DESIGN rule 6): at most ``max_buckets`` buckets, a window
anchored at the highest bucket seen. A value below the window is counted in
its lowest bucket (the lowest quantiles lose accuracy first; the tail that a
canary analysis looks at never does). Because the window depends only on the
highest value, the final state is a function of the multiset of values added:
`merge` is exactly associative and commutative, and merging equals adding
every value to one histogram. Values at or below ``min_value`` (1 µs) are
counted in one zero bucket.

`VersionMetrics` is what the data plane keeps per (app, function, version,
channel): request and error counters and a latency histogram, merged from the
deltas SDKs and gateways flush in the JSON form of ``to_dict``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Self

from coalmine.core.errors import InvalidInput, require_fields
from coalmine.core.model import Channel, validate_name, validate_version_name

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_MAX_BUCKETS",
    "DEFAULT_MIN_VALUE",
    "MAX_COUNT",
    "MAX_LATENCY_MS",
    "LatencyHistogram",
    "VersionMetrics",
    "wire_count",
]

DEFAULT_ALPHA = 0.01
"""Relative accuracy of every quantile: 1%."""
DEFAULT_MIN_VALUE = 0.001
"""Milliseconds; values at or below it (1 µs) share the zero bucket."""
DEFAULT_MAX_BUCKETS = 2048
"""With alpha 1%, 2048 buckets span a factor of 6 x 10^17 (1 µs to 20,000 years)."""

MAX_COUNT = 2**53 - 1
"""The most requests, errors or latencies one window may count, on the wire and once merged
in the store: counts stay exact as floats (Prometheus, the judge) and fit a 64-bit column."""
MAX_LATENCY_MS = 1e12
"""The longest latency a histogram from the wire may hold (about 31 years), so that every
bucket, sum and quantile stays a finite float."""


def _shown(value: object) -> str:
    """``repr(value)``, shortened: a number from the wire may have thousands of digits."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:24]}... ({len(text)} characters)"


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{what} must be a number, got {_shown(value)}")
    try:
        out = float(value)
    except OverflowError:  # an int beyond any float
        out = math.inf
    if not math.isfinite(out):
        raise InvalidInput(f"{what} must be finite, got {_shown(value)}")
    return out


def _count(value: object, what: str, *, positive: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < int(positive):
        need = "a whole number above 0" if positive else "a whole number >= 0"
        raise InvalidInput(f"{what} must be {need}, got {_shown(value)}")
    return value


def wire_count(value: object, what: str, *, positive: bool = False) -> int:
    """``value`` if it is a whole number from 0 (1 if ``positive``) to `MAX_COUNT`; else an
    `InvalidInput` naming ``what`` and the bound. For counts read from the wire."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not int(positive) <= value <= MAX_COUNT
    ):
        raise InvalidInput(
            f"{what} must be a whole number from {int(positive)} to {MAX_COUNT} (2^53 - 1),"
            f" got {_shown(value)}"
        )
    return value


class LatencyHistogram:
    """A mergeable latency sketch: quantiles within ``alpha`` relative error, bounded memory."""

    __slots__ = (
        "_alpha",
        "_bins",
        "_count",
        "_gamma",
        "_log_gamma",
        "_max",
        "_max_buckets",
        "_max_index",
        "_min",
        "_min_value",
        "_sum",
        "_zero",
    )

    def __init__(
        self,
        alpha: float = DEFAULT_ALPHA,
        *,
        min_value: float = DEFAULT_MIN_VALUE,
        max_buckets: int = DEFAULT_MAX_BUCKETS,
    ) -> None:
        alpha = _number(alpha, "alpha")
        if not 1e-4 <= alpha <= 0.5:
            raise InvalidInput(f"alpha {alpha!r} must be from 0.0001 to 0.5 (0.01 is 1%)")
        min_value = _number(min_value, "min_value")
        if min_value <= 0:
            raise InvalidInput(f"min_value {min_value!r} must be above 0 (milliseconds)")
        if isinstance(max_buckets, bool) or not isinstance(max_buckets, int):
            raise InvalidInput(f"max_buckets must be a whole number, got {max_buckets!r}")
        if not 2 <= max_buckets <= 1_000_000:
            raise InvalidInput(f"max_buckets {max_buckets} must be from 2 to 1,000,000")
        self._alpha = alpha
        self._gamma = (1 + alpha) / (1 - alpha)
        self._log_gamma = math.log(self._gamma)
        self._min_value = min_value
        self._max_buckets = max_buckets
        self._bins: dict[int, int] = {}
        self._zero = 0
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf
        self._max_index: int | None = None

    # -- configuration and summary ------------------------------------------------

    @property
    def alpha(self) -> float:
        return self._alpha

    @property
    def min_value(self) -> float:
        return self._min_value

    @property
    def max_buckets(self) -> int:
        return self._max_buckets

    @property
    def count(self) -> int:
        return self._count

    @property
    def sum(self) -> float:
        return self._sum

    @property
    def min(self) -> float | None:
        """The smallest value added (exact), or None when empty."""
        return self._min if self._count else None

    @property
    def max(self) -> float | None:
        """The largest value added (exact), or None when empty."""
        return self._max if self._count else None

    @property
    def mean(self) -> float | None:
        return self._sum / self._count if self._count else None

    @property
    def zero_count(self) -> int:
        """How many values were at or below ``min_value``."""
        return self._zero

    @property
    def bucket_count(self) -> int:
        """Non-empty buckets, the zero bucket included: never above ``max_buckets + 1``."""
        return len(self._bins) + (1 if self._zero else 0)

    def same_layout(self, other: LatencyHistogram) -> bool:
        """Whether both histograms bucket values identically (and so can merge)."""
        return (self._alpha, self._min_value, self._max_buckets) == (
            other._alpha,
            other._min_value,
            other._max_buckets,
        )

    # -- buckets ----------------------------------------------------------------------

    def index_of(self, value_ms: float) -> int:
        """The bucket a value above ``min_value`` falls in: ``ceil(log_gamma(value))``."""
        return math.ceil(math.log(value_ms) / self._log_gamma)

    def bounds(self, index: int) -> tuple[float, float]:
        """The values bucket ``index`` holds: ``(gamma^(index-1), gamma^index]``."""
        return math.exp((index - 1) * self._log_gamma), math.exp(index * self._log_gamma)

    def representative(self, index: int) -> float:
        """The value reported for bucket ``index``: within ``alpha`` of all its values."""
        return 2 * math.exp(index * self._log_gamma) / (self._gamma + 1)

    def bins(self) -> list[tuple[int, int]]:
        """The non-empty buckets as ``(index, count)``, lowest first (zero bucket apart)."""
        return sorted(self._bins.items())

    # -- adding ----------------------------------------------------------------------

    def add(self, value_ms: float, count: int = 1) -> None:
        """Count ``value_ms`` (a latency in milliseconds, >= 0) ``count`` times."""
        if type(value_ms) is float and count == 1 and 0.0 <= value_ms < math.inf:
            value = value_ms  # one measured duration: the recorders' hot path, valid as it is
        else:
            value = _number(value_ms, "a latency")
            if value < 0:
                raise InvalidInput(f"a latency cannot be negative, got {value_ms!r}")
            _count(count, "count", positive=True)
        if value <= self._min_value:
            self._zero += count
        else:
            self._add_index(math.ceil(math.log(value) / self._log_gamma), count)
        self._count += count
        self._sum += value * count
        if value < self._min:
            self._min = value
        if value > self._max:
            self._max = value

    def _add_index(self, index: int, count: int) -> None:
        if self._max_index is None or index > self._max_index:
            self._max_index = index
            floor = index - self._max_buckets + 1
            low = [i for i in self._bins if i < floor]
            if low:
                folded = sum(self._bins.pop(i) for i in low)
                self._bins[floor] = self._bins.get(floor, 0) + folded
        floor = self._max_index - self._max_buckets + 1
        index = max(index, floor)
        self._bins[index] = self._bins.get(index, 0) + count

    def merge(self, other: LatencyHistogram) -> None:
        """Add every value ``other`` holds to this histogram (``other`` is unchanged)."""
        if not isinstance(other, LatencyHistogram):
            raise InvalidInput(f"can only merge a LatencyHistogram, got {type(other).__name__}")
        if not self.same_layout(other):
            raise InvalidInput(
                "cannot merge histograms with different layouts:"
                f" alpha {self._alpha} vs {other._alpha},"
                f" min_value {self._min_value} vs {other._min_value},"
                f" max_buckets {self._max_buckets} vs {other._max_buckets}"
            )
        if not other._count:
            return
        # The highest bucket first, so the window moves (at most) once.
        for index, count in sorted(other._bins.items(), reverse=True):
            self._add_index(index, count)
        self._zero += other._zero
        self._count += other._count
        self._sum += other._sum
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    def copy(self) -> LatencyHistogram:
        out = LatencyHistogram(
            self._alpha, min_value=self._min_value, max_buckets=self._max_buckets
        )
        out.merge(self)
        return out

    # -- reading ---------------------------------------------------------------------

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile (0 <= q <= 1), or None when empty.

        The value of rank ``floor(q * (count - 1))`` (0-based) in sorted order,
        numpy's ``method="lower"``, within ``alpha`` relative error (a value in
        the zero bucket is reported as the smallest value seen).
        """
        q = _number(q, "a quantile")
        if not 0 <= q <= 1:
            raise InvalidInput(f"a quantile must be from 0 to 1, got {q!r}")
        if not self._count:
            return None
        rank = math.floor(q * (self._count - 1))
        if rank == 0:
            return self._min
        if rank == self._count - 1:
            return self._max
        seen = self._zero
        if rank < seen:
            return self._min
        for index, count in sorted(self._bins.items()):
            seen += count
            if rank < seen:
                return min(max(self.representative(index), self._min), self._max)
        return self._max  # unreachable: the bins hold every value above the zero bucket

    def count_above(self, value_ms: float) -> int:
        """How many values lie in buckets above the one that holds ``value_ms``.

        The share of requests slower than a threshold, exact up to the bucket
        width (``alpha``): the tail test of the judge counts with it.
        """
        value = _number(value_ms, "a latency")
        if value <= self._min_value:
            return self._count - self._zero
        return self.count_above_bucket(self.index_of(value))

    def quantile_bucket(self, q: float) -> int | None:
        """The bucket holding the ``q``-quantile (the value of rank ``floor(q (count - 1))``);
        None for the zero bucket. Raises InvalidInput when the histogram is empty."""
        q = _number(q, "a quantile")
        if not 0 <= q <= 1:
            raise InvalidInput(f"a quantile must be from 0 to 1, got {q!r}")
        if not self._count:
            raise InvalidInput("an empty histogram has no quantile bucket")
        rank = math.floor(q * (self._count - 1))
        seen = self._zero
        if rank < seen:
            return None
        for index, count in sorted(self._bins.items()):
            seen += count
            if rank < seen:
                return index
        raise AssertionError("the bins hold every value above the zero bucket")  # pragma: no cover

    def count_above_bucket(self, index: int | None) -> int:
        """How many values lie in buckets above bucket ``index`` (None: the zero bucket)."""
        if index is None:
            return self._count - self._zero
        return sum(count for i, count in self._bins.items() if i > index)

    # -- wire form -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON wire form, e.g. a delta an SDK flushes to the control plane."""
        return {
            "alpha": self._alpha,
            "min_value": self._min_value,
            "max_buckets": self._max_buckets,
            "count": self._count,
            "sum": self._sum,
            "min": self.min,
            "max": self.max,
            "zero": self._zero,
            "bins": [[index, count] for index, count in sorted(self._bins.items())],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyHistogram:
        """Read the wire form back, validating it (it comes from the network).

        Bounded so that nothing read can overflow a column or a float later:
        counts up to `MAX_COUNT`, latencies up to `MAX_LATENCY_MS`, only the
        buckets such latencies fall in, and a sum of at most count x max.
        """
        if not isinstance(data, Mapping):
            raise InvalidInput("a histogram must be a JSON object")
        expected = {
            "alpha",
            "min_value",
            "max_buckets",
            "count",
            "sum",
            "min",
            "max",
            "zero",
            "bins",
        }
        require_fields(data, expected, "a histogram")
        out = cls(data["alpha"], min_value=data["min_value"], max_buckets=data["max_buckets"])
        count = wire_count(data["count"], "histogram count")
        zero = wire_count(data["zero"], "histogram zero count")
        raw_bins = data["bins"]
        if not isinstance(raw_bins, list) or len(raw_bins) > out._max_buckets:
            raise InvalidInput(
                f"histogram bins must be a list of at most {out._max_buckets} [index, count] pairs"
            )
        # The buckets of latencies from min_value to MAX_LATENCY_MS (one spare on each side):
        # every bound and representative of such a bucket is a finite float.
        lowest = math.floor(math.log(out._min_value) / out._log_gamma)
        highest = out.index_of(MAX_LATENCY_MS) + 1
        bins: dict[int, int] = {}
        for pair in raw_bins:
            # The common case in one test (exact ints: JSON has no int subclasses).
            if (
                type(pair) in (list, tuple)
                and len(pair) == 2
                and type(pair[0]) is int
                and type(pair[1]) is int
                and 0 < pair[1] <= MAX_COUNT
                and lowest <= pair[0] <= highest
                and pair[0] not in bins
            ):
                bins[pair[0]] = pair[1]
                continue
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise InvalidInput(
                    f"a histogram bin must be an [index, count] pair, got {_shown(pair)}"
                )
            index, n = pair
            if isinstance(index, bool) or not isinstance(index, int):
                raise InvalidInput(f"a histogram bin index must be a whole number, got {index!r}")
            if not lowest <= index <= highest:
                raise InvalidInput(
                    f"histogram bin index {_shown(index)} is out of range: with alpha"
                    f" {out._alpha} and min_value {out._min_value} ms, latencies up to"
                    f" {MAX_LATENCY_MS:g} ms fall in buckets {lowest} to {highest}"
                )
            if index in bins:
                raise InvalidInput(f"histogram bin {index} appears twice")
            bins[index] = wire_count(n, f"the count of histogram bin {index}", positive=True)
        if zero + sum(bins.values()) != count:
            raise InvalidInput(
                f"histogram count {count} is not the zero count plus the bin counts"
                f" ({zero + sum(bins.values())})"
            )
        if bins and max(bins) - min(bins) >= out._max_buckets:
            raise InvalidInput(
                f"histogram bins span more than max_buckets ({out._max_buckets}) buckets"
            )
        total = _number(data["sum"], "histogram sum")
        if count:
            low = _number(data["min"], "histogram min")
            high = _number(data["max"], "histogram max")
            if not 0 <= low <= high or total < 0:
                raise InvalidInput(
                    "histogram min, max and sum must satisfy 0 <= min <= max, sum >= 0"
                )
            if high > MAX_LATENCY_MS:
                raise InvalidInput(
                    f"histogram max must be from 0 to {MAX_LATENCY_MS:g} ms, got {high!r}"
                )
            if total > count * high * (1 + 1e-6):  # float sums round; a relative slack
                raise InvalidInput(
                    f"histogram sum {total!r} is more than count x max ({count} x {high!r} ms)"
                )
            out._min, out._max = low, high
        elif data["min"] is not None or data["max"] is not None or total != 0:
            raise InvalidInput("an empty histogram has min and max null and sum 0")
        out._bins = bins
        out._zero = zero
        out._count = count
        out._sum = total
        out._max_index = max(bins) if bins else None
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LatencyHistogram):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        if not self._count:
            return f"LatencyHistogram(alpha={self._alpha}, empty)"
        p50, p99 = self.quantile(0.5), self.quantile(0.99)
        return (
            f"LatencyHistogram(alpha={self._alpha}, count={self._count},"
            f" p50={p50:.4g}, p99={p99:.4g}, max={self._max:.4g}, buckets={self.bucket_count})"
        )


@dataclass(eq=False, slots=True)
class VersionMetrics:
    """Requests, errors and latency of one version of one function in one channel.

    Bounded whatever the traffic: two counters and a `LatencyHistogram`.
    ``merge`` adds another window's counts (a delta flushed by an SDK or a
    gateway) for the same key.
    """

    app: str
    function: str
    version: str
    channel: Channel
    requests: int = 0
    errors: int = 0
    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)

    def __post_init__(self) -> None:
        validate_name(self.app, "app")
        validate_name(self.function, "function")
        validate_version_name(self.version)
        try:
            self.channel = Channel(self.channel)
        except ValueError:
            raise InvalidInput(
                f"invalid channel {self.channel!r}: use 'stable' or 'canary'"
            ) from None
        _count(self.requests, "requests")
        _count(self.errors, "errors")
        if self.errors > self.requests:
            raise InvalidInput(f"errors ({self.errors}) cannot exceed requests ({self.requests})")
        if not isinstance(self.histogram, LatencyHistogram):
            raise InvalidInput("histogram must be a LatencyHistogram")

    @property
    def key(self) -> tuple[str, str, str, Channel]:
        return (self.app, self.function, self.version, self.channel)

    @property
    def error_rate(self) -> float | None:
        """Errors per request, or None without requests."""
        return self.errors / self.requests if self.requests else None

    def record(self, latency_ms: float | None, *, error: bool = False) -> None:
        """Count one request: its latency (None if not measured) and whether it failed."""
        if latency_ms is not None:
            self.histogram.add(latency_ms)
        self.requests += 1
        if error:
            self.errors += 1

    def merge(self, other: VersionMetrics) -> None:
        """Add ``other``'s counts (same app, function, version and channel) to these."""
        if not isinstance(other, VersionMetrics):
            raise InvalidInput(f"can only merge VersionMetrics, got {type(other).__name__}")
        if other.key != self.key:
            raise InvalidInput(
                f"cannot merge metrics of {'/'.join(other.key)} into {'/'.join(self.key)}"
            )
        self.histogram.merge(other.histogram)
        self.requests += other.requests
        self.errors += other.errors

    def copy(self) -> Self:
        """A copy of the same kind (a subclass's fields included) with its own histogram."""
        return replace(self, histogram=self.histogram.copy())

    def to_dict(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "function": self.function,
            "version": self.version,
            "channel": str(self.channel),
            "requests": self.requests,
            "errors": self.errors,
            "histogram": self.histogram.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VersionMetrics:
        if not isinstance(data, Mapping):
            raise InvalidInput("version metrics must be a JSON object")
        expected = {"app", "function", "version", "channel", "requests", "errors", "histogram"}
        missing = sorted(expected - set(data))
        unknown = sorted(set(data) - expected)
        if missing or unknown:
            raise InvalidInput(
                "version metrics need exactly the fields "
                + ", ".join(sorted(expected))
                + (f"; missing: {', '.join(missing)}" if missing else "")
                + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            )
        return cls(
            data["app"],
            data["function"],
            data["version"],
            data["channel"],
            wire_count(data["requests"], "requests"),
            wire_count(data["errors"], "errors"),
            LatencyHistogram.from_dict(data["histogram"]),
        )
