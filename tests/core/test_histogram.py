"""The latency histogram: 1% quantiles, exact merges, bounded memory, a validated wire form."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalmine.core.errors import InvalidInput
from coalmine.core.histogram import (
    DEFAULT_ALPHA,
    DEFAULT_MAX_BUCKETS,
    MAX_COUNT,
    MAX_LATENCY_MS,
    LatencyHistogram,
    VersionMetrics,
)
from coalmine.core.model import Channel

# A hair above alpha: a value on a bucket boundary can land one bucket over in floating point.
TOLERANCE = DEFAULT_ALPHA * (1 + 1e-9)


def _filled(values: list[float] | np.ndarray, **kwargs: Any) -> LatencyHistogram:
    h = LatencyHistogram(**kwargs)
    for v in values:
        h.add(float(v))
    return h


def _true_quantile(values: list[float] | np.ndarray, q: float) -> float:
    """The value of rank floor(q (n-1)): numpy's method='lower', written out."""
    ordered = np.sort(np.asarray(values, dtype=float))
    return float(ordered[math.floor(q * (len(ordered) - 1))])


def _relative_error(got: float | None, want: float) -> float:
    assert got is not None
    return abs(got - want) / want if want else abs(got)


def _heavy(name: str, seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if name == "lognormal":
        return rng.lognormal(np.log(100), 2.5, n)
    if name == "pareto":
        return (rng.pareto(1.1, n) + 1) * 5
    if name == "weibull":
        return rng.weibull(0.4, n) * 50 + 0.01
    if name == "bimodal":
        return np.where(
            rng.random(n) < 0.97, rng.normal(20, 2, n).clip(1), rng.exponential(3000, n)
        )
    return rng.uniform(0.01, 1e6, n)


QUANTILES = st.one_of(
    st.sampled_from([0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0]),
    st.floats(min_value=0, max_value=1),
)


# -- accuracy ---------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(
        st.floats(min_value=0.002, max_value=1e7, allow_nan=False), min_size=1, max_size=300
    ),
    q=QUANTILES,
)
def test_quantile_is_within_one_percent_of_the_true_quantile(values: list[float], q: float) -> None:
    h = _filled(values)
    assert _relative_error(h.quantile(q), _true_quantile(values, q)) <= TOLERANCE


def test_the_reference_quantile_is_numpys_lower_method() -> None:
    values = np.random.default_rng(3).lognormal(0, 1, 1001)
    for q in (0.0, 0.1, 0.5, 0.95, 0.99, 1.0):
        assert _true_quantile(values, q) == float(np.quantile(values, q, method="lower"))


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(["lognormal", "pareto", "weibull", "bimodal", "uniform"]),
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 3000),
    qs=st.lists(QUANTILES, min_size=1, max_size=8),
)
def test_quantiles_of_heavy_tailed_data_stay_within_one_percent(
    name: str, seed: int, n: int, qs: list[float]
) -> None:
    values = _heavy(name, seed, n)
    h = _filled(values)
    for q in qs:
        assert _relative_error(h.quantile(q), _true_quantile(values, q)) <= TOLERANCE, (name, q)


def test_extremes_are_exact_and_the_summary_is_kept() -> None:
    values = [3.0, 1.5, 250.0, 42.0]
    h = _filled(values)
    assert h.quantile(0) == 1.5
    assert h.quantile(1) == 250.0
    assert (h.count, h.min, h.max) == (4, 1.5, 250.0)
    assert h.sum == pytest.approx(296.5)
    assert h.mean == pytest.approx(296.5 / 4)


def test_an_empty_histogram_has_no_quantile() -> None:
    h = LatencyHistogram()
    assert h.quantile(0.99) is None
    assert (h.count, h.min, h.max, h.mean, h.bucket_count) == (0, None, None, None, 0)
    assert "empty" in repr(h)


def test_values_at_or_below_min_value_share_the_zero_bucket() -> None:
    h = _filled([0.0, 0.0005, 0.001, 5.0])
    assert h.zero_count == 3
    assert h.quantile(0.5) == 0.0  # reported as the smallest value seen
    assert h.quantile(1) == 5.0
    assert h.bucket_count == 2


def test_counted_adds_equal_repeated_adds() -> None:
    a = LatencyHistogram()
    a.add(12.5, count=1000)
    b = _filled([12.5] * 1000)
    assert a == b


def test_count_above_counts_buckets_above_the_values_bucket() -> None:
    h = _filled(list(range(1, 101)))
    assert h.count_above(100.0) == 0
    assert h.count_above(0.0) == 100
    assert 9 <= h.count_above(90.0) <= 10  # 91..100, up to the 1% bucket width
    assert h.count_above(1000.0) == 0


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(0.0, 5000.0), min_size=1, max_size=300),
    q=st.floats(0.0, 1.0),
)
def test_the_quantile_bucket_holds_the_quantile_and_counts_above_it(
    values: list[float], q: float
) -> None:
    h = _filled(values)
    bucket = h.quantile_bucket(q)
    want = sorted(values)[math.floor(q * (len(values) - 1))]
    if bucket is None:
        assert want <= h.min_value
    else:
        # the bucket a value goes to is the histogram's own definition (index_of)
        assert want > h.min_value
        assert h.index_of(want) == bucket
        above = sum(v > h.min_value and h.index_of(v) > bucket for v in values)
        assert h.count_above_bucket(bucket) == above
    assert h.count_above_bucket(None) == sum(v > h.min_value for v in values)
    with pytest.raises(InvalidInput, match="empty histogram has no quantile bucket"):
        LatencyHistogram().quantile_bucket(q)


# -- merging ----------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    parts=st.lists(
        st.lists(st.floats(min_value=0, max_value=1e9, allow_nan=False), max_size=60),
        min_size=1,
        max_size=6,
    ),
    max_buckets=st.sampled_from([8, 64, DEFAULT_MAX_BUCKETS]),
)
def test_merging_equals_adding_every_value_to_one(
    parts: list[list[float]], max_buckets: int
) -> None:
    merged = LatencyHistogram(max_buckets=max_buckets)
    for part in parts:
        merged.merge(_filled(part, max_buckets=max_buckets))
    whole = _filled([v for part in parts for v in part], max_buckets=max_buckets)
    a, b = merged.to_dict(), whole.to_dict()
    assert a.pop("sum") == pytest.approx(b.pop("sum"))
    assert a == b


@settings(max_examples=100, deadline=None)
@given(
    a=st.lists(st.floats(min_value=0, max_value=1e12, allow_nan=False), max_size=50),
    b=st.lists(st.floats(min_value=0, max_value=1e12, allow_nan=False), max_size=50),
    c=st.lists(st.floats(min_value=0, max_value=1e12, allow_nan=False), max_size=50),
)
def test_merge_is_associative_and_commutative(
    a: list[float], b: list[float], c: list[float]
) -> None:
    ha, hb, hc = (_filled(x, max_buckets=16) for x in (a, b, c))

    def merged(*hs: LatencyHistogram) -> dict[str, Any]:
        out = hs[0].copy()
        for h in hs[1:]:
            out.merge(h)
        d = out.to_dict()
        d["sum"] = pytest.approx(d["sum"])  # float addition is not associative in the last bit
        return d

    left = ha.copy()
    left.merge(hb)
    right = hb.copy()
    right.merge(hc)
    assert merged(left, hc) == merged(ha, right)  # (a+b)+c == a+(b+c)
    assert merged(ha, hb) == merged(hb, ha)
    assert merged(ha, hb, hc) == merged(hc, ha, hb)


def test_merge_leaves_the_other_histogram_alone() -> None:
    a, b = _filled([1.0, 2.0]), _filled([3.0])
    before = b.to_dict()
    a.merge(b)
    assert b.to_dict() == before
    assert a.count == 3


def test_merging_different_layouts_is_refused() -> None:
    with pytest.raises(InvalidInput, match="different layouts"):
        LatencyHistogram(0.01).merge(LatencyHistogram(0.02))
    with pytest.raises(InvalidInput, match="can only merge a LatencyHistogram"):
        LatencyHistogram().merge("nope")  # type: ignore[arg-type]


# -- bounded memory ---------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    exponents=st.lists(st.floats(min_value=-300, max_value=300), min_size=1, max_size=400),
    max_buckets=st.sampled_from([2, 16, 128]),
)
def test_bucket_count_is_bounded_under_adversarial_ranges(
    exponents: list[float], max_buckets: int
) -> None:
    values = [10.0**e for e in exponents]
    h = _filled(values, max_buckets=max_buckets)
    assert h.bucket_count <= max_buckets + 1  # + the zero bucket
    assert len(h.to_dict()["bins"]) <= max_buckets
    # the top of the distribution keeps its accuracy: collapsing folds the lowest buckets
    assert h.quantile(1) == max(values)
    assert h.count == len(values)


def test_the_default_layout_spans_any_real_latency_without_collapsing() -> None:
    values = [10.0**e for e in np.linspace(-2.9, 8, 5000)]  # 1.3 µs to 28 hours
    h = _filled(values)
    assert h.bucket_count < DEFAULT_MAX_BUCKETS
    for q in (0.0, 0.001, 0.5, 0.99, 1.0):
        assert _relative_error(h.quantile(q), _true_quantile(values, q)) <= TOLERANCE


def test_collapsing_keeps_high_quantiles_accurate() -> None:
    rng = np.random.default_rng(7)
    body = rng.lognormal(np.log(100), 0.5, 5000)
    tiny = 10.0 ** rng.uniform(-2.9, -1, 50)  # below a window of 512 buckets (a factor of 27,000)
    h = _filled(np.concatenate([tiny, body]), max_buckets=512)
    assert h.bucket_count <= 513
    low = h.quantile(0.002)  # rank 10, among the tiny values: folded up to the window's floor
    assert low is not None
    assert low > 5 * _true_quantile(np.concatenate([tiny, body]), 0.002)
    for q in (0.5, 0.9, 0.99, 1.0):
        assert (
            _relative_error(h.quantile(q), _true_quantile(np.concatenate([tiny, body]), q))
            <= TOLERANCE
        )


def test_a_million_values_take_a_few_hundred_buckets() -> None:
    h = LatencyHistogram()
    rng = np.random.default_rng(1)
    for v in rng.lognormal(np.log(80), 1.0, 20_000):
        h.add(float(v), count=50)
    assert h.count == 1_000_000
    assert h.bucket_count < 600


# -- input checks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "count", "message"),
    [
        (-1.0, 1, "cannot be negative"),
        (math.nan, 1, "must be finite"),
        (math.inf, 1, "must be finite"),
        (True, 1, "must be a number"),
        ("12", 1, "must be a number"),
        (1.0, 0, "count must be a whole number above 0"),
        (1.0, 1.5, "count must be a whole number above 0"),
    ],
)
def test_add_rejects_bad_input(value: Any, count: Any, message: str) -> None:
    h = LatencyHistogram()
    with pytest.raises(InvalidInput, match=message):
        h.add(value, count)
    assert h.count == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 0}, "alpha 0.0 must be from 0.0001 to 0.5"),
        ({"alpha": 0.9}, "alpha 0.9 must be from"),
        ({"min_value": 0}, "min_value 0.0 must be above 0"),
        ({"max_buckets": 1}, "max_buckets 1 must be from 2"),
        ({"max_buckets": 2.5}, "max_buckets must be a whole number"),
    ],
)
def test_bad_layouts_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        LatencyHistogram(**kwargs)


def test_quantile_rejects_out_of_range() -> None:
    with pytest.raises(InvalidInput, match="from 0 to 1"):
        _filled([1.0]).quantile(1.5)


# -- the wire form ----------------------------------------------------------------------


def test_wire_form_round_trips_through_json() -> None:
    h = _filled([0.0, 1.0, 2.5, 100.0, 100.0, 99_999.0])
    wire = json.loads(json.dumps(h.to_dict()))
    back = LatencyHistogram.from_dict(wire)
    assert back == h
    assert back.quantile(0.5) == h.quantile(0.5)
    back.add(5.0)  # a read-back histogram keeps working
    assert back.count == 7


def test_empty_wire_form_round_trips() -> None:
    h = LatencyHistogram()
    assert LatencyHistogram.from_dict(h.to_dict()) == h


def _wire(**changes: Any) -> dict[str, Any]:
    data = _filled([1.0, 2.0, 3.0]).to_dict()
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "must be a JSON object"),
        ({"alpha": 0.01}, "missing: bins, count"),
        (_wire(extra=1), "unknown: extra"),
        (_wire(count=4), "is not the zero count plus the bin counts"),
        (_wire(bins=[[1, 1], [1, 2]]), "appears twice"),
        (_wire(bins=[[1, 0]]), "must be a whole number from 1 to"),
        (_wire(bins=[["a", 1]]), "index must be a whole number"),
        (_wire(bins=[[1]]), r"\[index, count\] pair"),
        (_wire(bins="x"), "must be a list"),
        (
            _wire(max_buckets=100, count=3, zero=0, bins=[[0, 1], [500, 2]]),
            "span more than max_buckets",
        ),
        (_wire(count=3, zero=0, bins=[[0, 1], [5000, 2]]), "bin index 5000 is out of range"),
        (_wire(count=1, zero=0, bins=[[-400, 1]]), "bin index -400 is out of range"),
        (
            _wire(count=MAX_COUNT + 1),
            f"histogram count must be a whole number from 0 to {MAX_COUNT}",
        ),
        (_wire(bins=[[1, 2**64]]), f"bin 1 must be a whole number from 1 to {MAX_COUNT}"),
        (_wire(max=2e12, sum=2e12), "histogram max must be from 0 to 1e\\+12 ms"),
        (_wire(sum=1e9), "histogram sum 1000000000.0 is more than count x max"),
        (
            _wire(sum=10**400),
            r"sum must be finite, got 100000000000000000000000\.\.\. \(401 characters\)",
        ),
        (_wire(min=5.0, max=1.0), "0 <= min <= max"),
        (_wire(alpha=2), "alpha 2.0 must be from"),
        (
            {**LatencyHistogram().to_dict(), "min": 1.0},
            "an empty histogram has min and max null",
        ),
        (_wire(bins=[[i, 1] for i in range(3000)], count=3000), "at most 2048"),
    ],
)
def test_from_dict_rejects_malformed_wire_data(data: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        LatencyHistogram.from_dict(data)


_WIRE_NUMBER = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**53 - 1, 2**53, 2**63, 10**400, -1, 0]),
    st.floats(allow_nan=True, allow_infinity=True),
)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.floats(0, MAX_LATENCY_MS, allow_nan=False), max_size=5),
    changes=st.dictionaries(
        st.sampled_from(["count", "zero", "sum", "min", "max"]), _WIRE_NUMBER, max_size=3
    ),
    bins=st.none() | st.lists(st.tuples(_WIRE_NUMBER, _WIRE_NUMBER).map(list), max_size=4),
)
def test_whatever_the_wire_holds_a_histogram_read_back_stays_finite(
    values: list[float], changes: dict[str, Any], bins: list[Any] | None
) -> None:
    """from_dict refuses with InvalidInput or gives a histogram whose every number (counts,
    buckets, quantiles, merged with itself) stays in bounds: nothing read overflows later."""
    data = _filled(values).to_dict() | changes
    if bins is not None:
        data["bins"] = bins
    try:
        h = LatencyHistogram.from_dict(data)
    except InvalidInput:
        return
    assert h.count <= MAX_COUNT
    assert 0 <= h.sum <= h.count * MAX_LATENCY_MS * (1 + 1e-6)
    for index, _ in h.bins():
        low, high = h.bounds(index)
        assert math.isfinite(low)
        assert math.isfinite(high)
        assert math.isfinite(h.representative(index))
    assert LatencyHistogram.from_dict(json.loads(json.dumps(h.to_dict()))) == h
    h.merge(h.copy())  # a read adds windows up without a bound: still finite
    for q in (0.0, 0.01, 0.5, 0.99, 1.0):
        got = h.quantile(q)
        assert got is None or math.isfinite(got)


# -- VersionMetrics ---------------------------------------------------------------------


def _vm(channel: str = "canary", version: str = "v2") -> VersionMetrics:
    return VersionMetrics("shop", "place-order", version, Channel(channel))


def test_version_metrics_record_and_merge() -> None:
    a, b = _vm(), _vm()
    a.record(10.0)
    a.record(20.0, error=True)
    b.record(None, error=True)  # a failure without a latency
    b.record(30.0)
    a.merge(b)
    assert (a.requests, a.errors, a.histogram.count) == (4, 2, 3)
    assert a.error_rate == 0.5
    assert a.key == ("shop", "place-order", "v2", Channel.CANARY)


def test_version_metrics_merge_needs_the_same_key() -> None:
    with pytest.raises(InvalidInput, match="cannot merge metrics of shop/place-order/v1/stable"):
        _vm().merge(_vm("stable", "v1"))


def test_version_metrics_round_trip_and_copy() -> None:
    a = _vm()
    for v in (1.0, 5.0, 5.0, 80.0):
        a.record(v)
    a.errors = 1
    back = VersionMetrics.from_dict(json.loads(json.dumps(a.to_dict())))
    assert back.to_dict() == a.to_dict()
    c = a.copy()
    c.record(1.0)
    assert (a.requests, c.requests) == (4, 5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"errors": 3, "requests": 2}, r"errors \(3\) cannot exceed requests \(2\)"),
        ({"requests": -1}, "requests must be a whole number >= 0"),
        ({"channel": "blue"}, "invalid channel 'blue'"),
        ({"app": "Shop"}, "invalid app name"),
        ({"version": ""}, "invalid version name"),
    ],
)
def test_version_metrics_validation(kwargs: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {
        "app": "shop",
        "function": "place-order",
        "version": "v2",
        "channel": "canary",
    }
    with pytest.raises(InvalidInput, match=message):
        VersionMetrics(**{**base, **kwargs})


def test_version_metrics_from_dict_checks_fields() -> None:
    with pytest.raises(InvalidInput, match="missing: histogram"):
        VersionMetrics.from_dict({k: v for k, v in _vm().to_dict().items() if k != "histogram"})
    assert VersionMetrics.from_dict(_vm().to_dict()).error_rate is None
