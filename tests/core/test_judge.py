"""The judge: each failure mode, the tests behind it, readable reasons, and the Tracker."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from coalmine.core.analysis import AnalysisSettings, CustomCheck, InconclusivePolicy
from coalmine.core.errors import InvalidInput
from coalmine.core.histogram import LatencyHistogram, VersionMetrics
from coalmine.core.judge import (
    Action,
    MetricResult,
    Outcome,
    Tracker,
    Verdict,
    fisher_greater,
    judge,
    mann_whitney,
)
from coalmine.core.model import Channel

_N = NormalDist()


def traffic(
    channel: str,
    requests: int,
    errors: int,
    *,
    median: float = 100.0,
    sigma: float = 0.5,
    scale: float = 1.0,
    latencies: int | None = None,
) -> VersionMetrics:
    """Deterministic lognormal latencies: the exact quantiles of the distribution."""
    m = VersionMetrics(
        "shop", "place-order", "v2" if channel == "canary" else "v1", Channel(channel)
    )
    n = requests if latencies is None else latencies
    for i in range(n):
        m.histogram.add(median * scale * math.exp(sigma * _N.inv_cdf((i + 0.5) / n)))
    m.requests, m.errors = requests, errors
    return m


STABLE = traffic("stable", 9000, 90)
TAIL_SIGMA = 0.5 + math.log(1.5) / _N.inv_cdf(0.99)  # same median, p99 x1.5


def outcomes(v: Verdict) -> dict[str, Outcome]:
    return {m.name: m.outcome for m in v.metrics}


# -- layering ---------------------------------------------------------------------------


def test_importing_the_judge_does_not_import_scipy_or_numpy() -> None:
    code = (
        "import sys, coalmine.core.judge, coalmine.core.analysis, coalmine.core.histogram;"
        "print(','.join(m for m in ('scipy', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert out == ""


# -- the statistics against scipy -------------------------------------------------------


def _expanded(h: LatencyHistogram) -> np.ndarray:
    """Every value of a histogram at its bucket's representative (the zero bucket at 0)."""
    values = [np.zeros(h.zero_count)]
    values += [np.full(count, h.representative(index)) for index, count in h.bins()]
    return np.concatenate(values)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n1=st.integers(1, 300),
    n2=st.integers(1, 300),
    shift=st.floats(0.5, 2.0),
    zeros=st.integers(0, 5),
)
def test_binned_mann_whitney_is_scipys_on_the_bucketed_values(
    seed: int, n1: int, n2: int, shift: float, zeros: int
) -> None:
    rng = np.random.default_rng(seed)
    a, b = LatencyHistogram(), LatencyHistogram()
    for v in rng.lognormal(3, 0.7, n1) * shift:
        a.add(float(v))
    for v in rng.lognormal(3, 0.7, n2):
        b.add(float(v))
    a.add(0.0, zeros + 1)  # zero-bucket ties on both sides
    b.add(0.0, zeros + 1)
    got = mann_whitney(a, b)
    want = stats.mannwhitneyu(
        _expanded(a), _expanded(b), alternative="greater", method="asymptotic"
    )
    assert got.u == pytest.approx(want.statistic)
    assert got.p_greater == pytest.approx(want.pvalue, rel=1e-6, abs=1e-12)
    assert got.share == pytest.approx(want.statistic / (a.count * b.count))


def test_mann_whitney_of_all_ties_is_no_evidence() -> None:
    a, b = LatencyHistogram(), LatencyHistogram()
    a.add(5.0, 10)
    b.add(5.0, 20)
    assert mann_whitney(a, b).p_greater == 1.0
    assert mann_whitney(a, LatencyHistogram()).p_greater == 1.0


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ((3, 1000, 0, 9000), 0.000997),  # sparse: every error on the canary
        ((1, 1000, 0, 9000), 0.1),
        ((30, 1000, 90, 9000), None),
        ((10, 1000, 90, 9000), None),
        ((0, 1000, 90, 9000), 1.0),
    ],
)
def test_fisher_greater_is_scipys_one_sided_exact_test(
    table: tuple[int, int, int, int], expected: float | None
) -> None:
    a, n, b, m = table
    want = stats.fisher_exact([[a, n - a], [b, m - b]], alternative="greater").pvalue
    got = fisher_greater(a, n, b, m)
    assert got == pytest.approx(want)
    if expected is not None:
        assert got == pytest.approx(expected, rel=0.01)


def test_fisher_greater_rejects_impossible_counts() -> None:
    with pytest.raises(InvalidInput, match="events cannot exceed totals"):
        fisher_greater(5, 4, 0, 10)
    with pytest.raises(InvalidInput, match="a_events must be a whole number"):
        fisher_greater(-1, 4, 0, 10)


# -- each failure mode ------------------------------------------------------------------


def test_no_data_is_inconclusive_never_a_silent_pass() -> None:
    empty_c, empty_s = traffic("canary", 0, 0), traffic("stable", 0, 0)
    v = judge(empty_c, empty_s)
    assert v.outcome is Outcome.INCONCLUSIVE
    assert v.reasons == ("no data: neither canary nor stable served a request in this window",)
    assert set(outcomes(v).values()) == {Outcome.INCONCLUSIVE}


@pytest.mark.parametrize(
    ("canary", "stable", "reason"),
    [
        (12, 9000, "too little traffic (canary 12 requests, need 200)"),
        (0, 9000, "too little traffic (canary 0 requests, need 200)"),
        (1000, 150, "too little traffic (stable 150 requests, need 200)"),
        (12, 30, "too little traffic (canary 12 and stable 30 requests, need 200 each)"),
    ],
)
def test_too_little_traffic_is_inconclusive_even_when_the_canary_looks_bad(
    canary: int, stable: int, reason: str
) -> None:
    # every canary request failed and is 3x slower: still not enough to judge
    v = judge(traffic("canary", canary, canary, scale=3.0), traffic("stable", stable, 0))
    assert v.outcome is Outcome.INCONCLUSIVE
    assert v.reason == reason


def test_sparse_errors_are_judged_with_the_exact_test() -> None:
    stable = traffic("stable", 9000, 0)
    # within the default +1 pp: a pass, whatever a test would say
    v = judge(traffic("canary", 1000, 3), stable)
    assert v.metric("error_rate").outcome is Outcome.PASS
    assert v.metric("error_rate").reason == (
        "canary errors 0.3% (3 of 1,000) vs stable 0% (0 of 9,000), +0.3 pp, limit +1 pp"
    )
    # a +0.2 pp limit: the exact test must show the canary more than 0.1 pp (half the
    # limit) above stable. 6 errors against none do; 3 could still be chance.
    strict = AnalysisSettings.parse({"metrics": {"error_rate": {"max_increase_pp": 0.2}}})
    v = judge(traffic("canary", 1000, 6), stable, strict)
    assert v.outcome is Outcome.FAIL
    assert v.reason == (
        "canary errors 0.6% (6 of 1,000) vs stable 0% (0 of 9,000), +0.6 pp, limit +0.2 pp"
        " (p=0.0022)"
    )
    # the p-value is Fisher's exact test with stable given the margin's 9 errors
    assert v.metric("error_rate").p_value == pytest.approx(fisher_greater(6, 1000, 9, 9000))
    v = judge(traffic("canary", 1000, 3), stable, strict)
    assert v.outcome is Outcome.INCONCLUSIVE
    assert v.reason == (
        "canary errors 0.3% (3 of 1,000) vs stable 0% (0 of 9,000), +0.3 pp, limit +0.2 pp,"
        " not significant yet (p=0.11, need p<0.01)"
    )
    tiny = AnalysisSettings.parse({"metrics": {"error_rate": {"max_increase_pp": 0.05}}})
    v = judge(traffic("canary", 1000, 1), stable, tiny)
    assert v.outcome is Outcome.INCONCLUSIVE
    assert v.reason == (
        "canary errors 0.1% (1 of 1,000) vs stable 0% (0 of 9,000), +0.1 pp, limit +0.05 pp,"
        " not significant yet (p=0.27, need p<0.01)"
    )


def test_just_over_the_limit_is_not_enough_evidence() -> None:
    """Significantly above stable, but not shown to be more than half the limit above."""
    canary, stable = traffic("canary", 1750, 59), traffic("stable", 15750, 358)
    assert fisher_greater(59, 1750, 358, 15750) < 0.01  # above stable: yes
    v = judge(canary, stable)
    assert v.outcome is Outcome.INCONCLUSIVE
    assert v.metric("error_rate").reason.startswith(
        "canary errors 3.37% (59 of 1,750) vs stable 2.27% (358 of 15,750), +1.1 pp,"
        " limit +1 pp, not significant yet (p=0.091, need p<0.01)"
    )


def test_a_worse_tail_with_the_same_median_fails_on_p99_not_p50() -> None:
    v = judge(traffic("canary", 1000, 10, sigma=TAIL_SIGMA), STABLE)
    assert v.outcome is Outcome.FAIL
    assert outcomes(v) == {
        "error_rate": Outcome.PASS,
        "latency_p50": Outcome.PASS,
        "latency_p95": Outcome.FAIL,
        "latency_p99": Outcome.FAIL,
    }
    assert (
        v.metric("latency_p50").reason == "canary p50 100 ms vs stable 100 ms (+0.0%), limit +20%"
    )
    assert v.metric("latency_p99").reason == (
        "canary p99 478 ms vs stable 321 ms (+49%), limit +20%; 4.1% of canary requests are"
        " slower than stable's p99 vs 0.93% of stable's (p<0.0001)"
    )
    # the rank test alone would not see it: the canary is not stochastically slower
    assert mann_whitney(v_hist("canary", TAIL_SIGMA), STABLE.histogram).p_greater > 0.3


def v_hist(channel: str, sigma: float) -> LatencyHistogram:
    return traffic(channel, 1000, 0, sigma=sigma).histogram


def test_a_clear_regression_fails_with_readable_reasons() -> None:
    v = judge(traffic("canary", 1000, 40, scale=1.5), STABLE)
    assert v.outcome is Outcome.FAIL
    assert set(outcomes(v).values()) == {Outcome.FAIL}
    assert v.reasons == (
        "canary errors 4% (40 of 1,000) vs stable 1% (90 of 9,000), +3 pp, limit +1 pp (p<0.0001)",
        "canary p50 150 ms vs stable 100 ms (+49%), limit +20%; Mann-Whitney U: the canary"
        " is slower in 72% of request pairs (p<0.0001)",
        "canary p95 340 ms vs stable 228 ms (+49%), limit +20%; 19.5% of canary requests are"
        " slower than stable's p95 vs 4.74% of stable's (p<0.0001)",
        "canary p99 478 ms vs stable 321 ms (+49%), limit +20%; 6.2% of canary requests are"
        " slower than stable's p99 vs 0.93% of stable's (p<0.0001)",
    )
    p99 = v.metric("latency_p99")
    assert (p99.canary, p99.stable, p99.limit, p99.change_unit) == (
        pytest.approx(478, abs=1),
        pytest.approx(321, abs=1),
        20.0,
        "%",
    )


def test_a_clear_pass() -> None:
    v = judge(traffic("canary", 1000, 10), STABLE)
    assert v.outcome is Outcome.PASS
    assert v.reasons == (
        "canary errors 1% (10 of 1,000) vs stable 1% (90 of 9,000), +0 pp, limit +1 pp",
        "canary p50 100 ms vs stable 100 ms (+0.0%), limit +20%",
        "canary p95 228 ms vs stable 228 ms (+0.0%), limit +20%",
        "canary p99 314 ms vs stable 321 ms (-2.0%), limit +20%",
    )
    assert v.notes == ()


def test_a_fault_stable_shares_is_reported_not_attributed_to_the_canary() -> None:
    """An alarm firing before the release: stable at 8% errors does not fail the canary."""
    v = judge(traffic("canary", 1000, 82), traffic("stable", 9000, 720))
    assert v.outcome is Outcome.PASS
    assert v.notes == ("stable is also at 8% errors: not attributable to the canary",)
    assert v.metric("error_rate").reason == (
        "canary errors 8.2% (82 of 1,000) vs stable 8% (720 of 9,000), +0.2 pp, limit +1 pp;"
        " stable is also at 8% errors: not attributable to the canary"
    )


def test_a_fix_forward_canary_passes_and_says_it_is_better() -> None:
    v = judge(traffic("canary", 1000, 10), traffic("stable", 9000, 720))
    assert v.outcome is Outcome.PASS
    assert v.notes == ("the canary has fewer errors than stable (1% vs 8%)",)


def test_only_what_the_canary_adds_to_a_shared_fault_counts() -> None:
    stable = traffic("stable", 9000, 720)
    v = judge(traffic("canary", 1000, 100), stable)  # +2 pp on top of 8%: not yet certain
    assert v.outcome is Outcome.INCONCLUSIVE
    assert v.reason == (
        "canary errors 10% (100 of 1,000) vs stable 8% (720 of 9,000), +2 pp, limit +1 pp,"
        " not significant yet (p=0.064, need p<0.01); stable is also at 8% errors, but the"
        " canary adds 2 pp more"
    )
    v = judge(traffic("canary", 4000, 480), traffic("stable", 36000, 2880))  # +4 pp, sure
    assert v.outcome is Outcome.FAIL
    assert v.reason.endswith("stable is also at 8% errors, but the canary adds 4 pp more")


def test_over_the_limit_but_not_significant_is_inconclusive() -> None:
    settings = AnalysisSettings(min_requests=10)
    v = judge(traffic("canary", 12, 0, scale=1.3), traffic("stable", 40, 0), settings)
    assert v.outcome is Outcome.INCONCLUSIVE
    assert v.reason == (
        "canary p50 123 ms vs stable 98.5 ms (+25%), limit +20%, not significant yet:"
        " Mann-Whitney U: the canary is slower in 64% of request pairs (p=0.067, need p<0.01)"
    )


def test_latency_needs_enough_measurements_of_its_own() -> None:
    v = judge(traffic("canary", 1000, 10, latencies=50), STABLE)
    assert v.metric("error_rate").outcome is Outcome.PASS
    assert v.metric("latency_p99").outcome is Outcome.INCONCLUSIVE
    assert v.metric("latency_p99").reason == (
        "too few latency measurements for p99 (canary 50, stable 9,000, need 200 each)"
    )
    assert v.outcome is Outcome.INCONCLUSIVE


def test_a_verdict_is_its_worst_metrics_outcome() -> None:
    settings = AnalysisSettings(custom=(CustomCheck("queue_lag_ms", max_increase=5),))
    ok = judge(traffic("canary", 1000, 10), STABLE, settings, custom={"queue_lag_ms": (11, 10)})
    assert ok.outcome is Outcome.PASS
    missing = judge(traffic("canary", 1000, 10), STABLE, settings)
    assert missing.outcome is Outcome.INCONCLUSIVE
    assert missing.reason == "no value for custom metric queue_lag_ms (canary None, stable None)"
    failed = judge(
        traffic("canary", 1000, 10, latencies=50),  # inconclusive latency ...
        STABLE,
        settings,
        custom={"queue_lag_ms": (30, 10)},  # ... and a failing custom metric
    )
    assert failed.outcome is Outcome.FAIL
    assert failed.reason == "canary queue_lag_ms 30 vs stable 10 (+20, limit +5)"


@pytest.mark.parametrize(
    ("check", "values", "outcome", "reason"),
    [
        (
            CustomCheck("cost", max_increase_pct=10),
            (1.2, 1.0),
            Outcome.FAIL,
            "canary cost 1.2 vs stable 1 (+20%, limit +10%)",
        ),
        (
            CustomCheck("cost", max_increase_pct=10),
            (1.05, 1.0),
            Outcome.PASS,
            "canary cost 1.05 vs stable 1 (+5.0%, limit +10%)",
        ),
        (
            CustomCheck("cost", max_increase_pct=10),
            (0.5, 0.0),
            Outcome.FAIL,
            "canary cost 0.5 vs stable 0 (stable at 0, limit +10%)",
        ),
        (
            CustomCheck("cost", max_increase=0.5),
            (float("nan"), 1.0),
            Outcome.INCONCLUSIVE,
            "no value for custom metric cost (canary nan, stable 1.0)",
        ),
    ],
)
def test_custom_metrics(
    check: CustomCheck, values: tuple[float, float], outcome: Outcome, reason: str
) -> None:
    v = judge(
        traffic("canary", 1000, 10),
        STABLE,
        AnalysisSettings(custom=(check,)),
        custom={"cost": values},
    )
    assert v.metric("cost").outcome is outcome
    assert v.metric("cost").reason == reason


def test_a_custom_value_for_an_unconfigured_metric_is_an_error() -> None:
    with pytest.raises(InvalidInput, match="does not configure: nope"):
        judge(traffic("canary", 1000, 10), STABLE, custom={"nope": (1.0, 1.0)})


def test_malformed_input_is_an_error() -> None:
    class Bad:
        requests, errors, histogram = 10, 11, LatencyHistogram()

    with pytest.raises(InvalidInput, match="canary errors must be a whole number"):
        judge(Bad(), STABLE)
    other = traffic("canary", 1000, 10)
    other.histogram = LatencyHistogram(0.02)
    with pytest.raises(InvalidInput, match="same layout"):
        judge(other, STABLE)


def test_only_the_configured_metrics_are_judged() -> None:
    settings = AnalysisSettings.parse(
        {"metrics": {"latency_p50": None, "latency_p95": None, "error_rate": None}}
    )
    v = judge(traffic("canary", 1000, 500), STABLE, settings)  # 50% errors, but not checked
    assert [m.name for m in v.metrics] == ["latency_p99"]
    assert v.outcome is Outcome.PASS


def test_verdicts_serialise_to_json() -> None:
    v = judge(traffic("canary", 1000, 40, scale=1.5), STABLE)
    data = json.loads(json.dumps(v.to_dict()))
    assert data["outcome"] == "fail"
    assert data["metrics"][0]["name"] == "error_rate"
    assert data["metrics"][0]["change_unit"] == "pp"
    assert data["reason"] == v.reason
    inf = MetricResult("x", Outcome.FAIL, "r", canary=1.0, stable=0.0, change=math.inf)
    assert inf.to_dict()["change"] is None
    with pytest.raises(KeyError):
        v.metric("latency_p42")


# -- the Tracker ------------------------------------------------------------------------

PASS = judge(traffic("canary", 1000, 10), STABLE)
FAIL = judge(traffic("canary", 1000, 40, scale=1.5), STABLE)
LOW = judge(traffic("canary", 12, 0), STABLE)


def _run(verdicts: list[Verdict], tracker: Tracker | None = None) -> list[Tracker]:
    tracker = tracker or Tracker.start()
    out = []
    for v in verdicts:
        tracker = tracker.observe(v)
        out.append(tracker)
    return out


def test_consecutive_failures_roll_back() -> None:
    first, second = _run([FAIL, FAIL])
    assert first.action is Action.CONTINUE
    assert first.reason.startswith(
        "canary failed analysis (1 of 2 consecutive failed intervals before rollback): canary"
        " errors 4%"
    )
    assert second.action is Action.ROLLBACK
    assert second.reason == f"canary failed analysis for 2 consecutive intervals: {FAIL.reason}"
    assert second.consecutive_failures == 2


@pytest.mark.parametrize("between", [PASS, LOW], ids=["a pass", "an inconclusive interval"])
def test_failures_must_be_consecutive(between: Verdict) -> None:
    trackers = _run([FAIL, between, FAIL])
    assert [t.action for t in trackers] == [Action.CONTINUE] * 3
    assert trackers[-1].consecutive_failures == 1


def test_a_rollback_is_final() -> None:
    trackers = _run([FAIL, FAIL, PASS, PASS])
    assert [t.action for t in trackers] == [
        Action.CONTINUE,
        Action.ROLLBACK,
        Action.ROLLBACK,
        Action.ROLLBACK,
    ]
    assert trackers[-1].intervals == 4
    assert trackers[-1].reason == trackers[1].reason


def test_a_failure_limit_of_one_rolls_back_at_once() -> None:
    (t,) = _run([FAIL], Tracker.start(AnalysisSettings(failure_limit=1)))
    assert t.action is Action.ROLLBACK
    assert t.reason.startswith("canary failed analysis for 1 interval: ")


def test_too_many_inconclusive_intervals_pause() -> None:
    trackers = _run([LOW] * 7)
    assert [t.action for t in trackers] == [Action.CONTINUE] * 5 + [Action.PAUSE] * 2
    assert trackers[4].reason == (
        "analysis inconclusive (5 of 5 intervals allowed): too little traffic (canary 12"
        " requests, need 200)"
    )
    assert trackers[5].reason == (
        "analysis inconclusive for 6 intervals: too little traffic (canary 12 requests, need 200)"
    )
    resumed = trackers[-1].observe(PASS)  # traffic arrived and the canary is fine
    assert resumed.action is Action.CONTINUE
    assert resumed.consecutive_inconclusive == 0
    assert resumed.reason.startswith("canary passed analysis: canary errors 1%")


def test_inconclusive_continue_policy_only_says_so() -> None:
    settings = AnalysisSettings(max_inconclusive=1, inconclusive=InconclusivePolicy.CONTINUE)
    trackers = _run([LOW] * 3, Tracker.start(settings))
    assert [t.action for t in trackers] == [Action.CONTINUE] * 3
    assert trackers[-1].reason == (
        "analysis inconclusive for 3 intervals, continuing (inconclusive: continue): too little"
        " traffic (canary 12 requests, need 200)"
    )


def test_a_fail_ends_a_run_of_inconclusive_intervals() -> None:
    trackers = _run([LOW] * 5 + [FAIL] + [LOW] * 5)
    assert all(t.action is Action.CONTINUE for t in trackers)
    assert trackers[-1].consecutive_inconclusive == 5


def test_tracker_state_round_trips() -> None:
    (*_, t) = _run([FAIL, LOW, LOW])
    data: dict[str, Any] = json.loads(json.dumps(t.to_dict()))
    assert Tracker.from_dict(data) == t
    with pytest.raises(InvalidInput, match="invalid tracker state"):
        Tracker.from_dict({**data, "action": "explode"})
    with pytest.raises(InvalidInput, match="invalid tracker state"):
        Tracker.from_dict({"intervals": 1})
