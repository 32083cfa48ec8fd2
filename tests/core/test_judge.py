"""The judge: each failure mode, the tests behind it, readable reasons, the evidence each
metric needs, the state carried from look to look, and the Tracker."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from statistics import NormalDist
from typing import Any

import pytest

from coalmine.core.analysis import AnalysisSettings, CustomCheck, InconclusivePolicy
from coalmine.core.errors import InvalidInput
from coalmine.core.histogram import LatencyHistogram, VersionMetrics
from coalmine.core.judge import (
    EFFECT_FLOOR,
    Action,
    JudgeState,
    MetricResult,
    Outcome,
    Tracker,
    Verdict,
    judge,
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


# -- each failure mode ------------------------------------------------------------------


def test_no_data_is_inconclusive_never_a_silent_pass() -> None:
    empty_c, empty_s = traffic("canary", 0, 0), traffic("stable", 0, 0)
    v = judge(empty_c, empty_s)
    assert v.outcome is Outcome.INCONCLUSIVE
    assert v.reasons == ("no data: neither canary nor stable served a request in this window",)
    assert v.waiting
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
    assert v.waiting, "evidence is still coming: the tracker does not count it"
    assert not v.enough


def test_sparse_errors_on_a_stable_with_none_are_judged_exactly() -> None:
    """Errors are compared conditionally on how many there were: with stable at zero,
    every canary error is evidence (no normal approximation, no rank ties)."""
    stable = traffic("stable", 9000, 0)
    # within the default +1 pp: a pass, whatever the test says
    v = judge(traffic("canary", 1000, 3), stable)
    assert v.metric("error_rate").outcome is Outcome.PASS
    assert v.metric("error_rate").reason == (
        "canary errors 0.3% (3 of 1,000) vs stable 0% (0 of 9,000), +0.3 pp, limit +1 pp"
    )
    # a +0.2 pp limit: 6 errors against none are proven beyond the 0.0025 each metric
    # gets (0.01 split over four), and beyond half the limit; 3 could still be chance
    strict = AnalysisSettings.parse({"metrics": {"error_rate": {"max_increase_pp": 0.2}}})
    v = judge(traffic("canary", 1000, 6), stable, strict)
    assert v.outcome is Outcome.FAIL
    assert v.reason == (
        "canary errors 0.6% (6 of 1,000) vs stable 0% (0 of 9,000), +0.6 pp, limit +0.2 pp"
        " (p<0.0001)"
    )
    assert v.metric("error_rate").p_value == pytest.approx(1.17e-5, rel=0.01)
    v = judge(traffic("canary", 1000, 3), stable, strict)
    assert v.outcome is Outcome.INCONCLUSIVE
    assert v.reason == (
        "canary errors 0.3% (3 of 1,000) vs stable 0% (0 of 9,000), +0.3 pp, limit +0.2 pp,"
        " not significant yet (p=0.0077, need p<0.0025)"
    )
    tiny = AnalysisSettings.parse({"metrics": {"error_rate": {"max_increase_pp": 0.05}}})
    v = judge(traffic("canary", 1000, 1), stable, tiny)
    assert v.outcome is Outcome.INCONCLUSIVE
    assert v.reason == (
        "canary errors 0.1% (1 of 1,000) vs stable 0% (0 of 9,000), +0.1 pp, limit +0.05 pp,"
        " not significant yet (p=0.31, need p<0.0025)"
    )


def test_just_over_the_limit_is_not_enough_evidence() -> None:
    canary, stable = traffic("canary", 1750, 59), traffic("stable", 15750, 358)
    v = judge(canary, stable)
    assert v.outcome is Outcome.INCONCLUSIVE
    assert v.metric("error_rate").reason.startswith(
        "canary errors 3.37% (59 of 1,750) vs stable 2.27% (358 of 15,750), +1.1 pp,"
        " limit +1 pp, not significant yet (p=0.14, need p<0.0025)"
    )


def test_a_worse_tail_with_the_same_median_fails_on_p95_and_p99_not_p50() -> None:
    """More variance, no shift (Kayenta issue 780): the median's exceedances do not move,
    the tail's do. A rank test would see nothing; a mean test would be dragged by it."""
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
    # less variance, no shift: nothing fails (one-sided: a tighter canary is no regression)
    tight = judge(traffic("canary", 1000, 10, sigma=0.35), STABLE)
    assert tight.outcome is Outcome.PASS


def test_a_clear_regression_fails_with_readable_reasons() -> None:
    v = judge(traffic("canary", 1000, 40, scale=1.5), STABLE)
    assert v.outcome is Outcome.FAIL
    assert set(outcomes(v).values()) == {Outcome.FAIL}
    assert v.reasons == (
        "canary errors 4% (40 of 1,000) vs stable 1% (90 of 9,000), +3 pp, limit +1 pp (p<0.0001)",
        "canary p50 150 ms vs stable 100 ms (+49%), limit +20%; 78.3% of canary requests are"
        " slower than stable's p50 vs 48.8% of stable's (p<0.0001)",
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
        " not significant yet (p=0.77, need p<0.0025); stable is also at 8% errors, but the"
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
        " 66.67% of canary requests are slower than stable's p50 vs 50% of stable's (p=1,"
        " need p<0.0025)"
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


# -- look after look: the state, the evidence, the level ----------------------------------


def test_a_fault_stable_shares_at_a_new_exposure_is_not_blamed_on_the_canary() -> None:
    """Each look is judged on what it added, canary against stable in the same minutes. A
    dependency failing for everyone (10% errors) right after the exposure went from 10% to
    50% makes the cumulative canary look twice as bad as stable; the looks do not."""
    first = judge(traffic("canary", 1000, 10), traffic("stable", 9000, 90))
    canary, stable = traffic("canary", 6000, 510), traffic("stable", 14000, 590)
    # judged as one window (no state: the first look), the mix of minutes fails it ...
    assert judge(canary, stable).outcome is Outcome.FAIL
    # ... judged look by look, the incident's minutes add as many errors to each side
    carried = judge(canary, stable, state=first.state)
    assert carried.metric("error_rate").outcome is Outcome.INCONCLUSIVE
    assert carried.metric("error_rate").p_value == 1.0
    assert carried.outcome is not Outcome.FAIL


def test_the_state_carries_the_tests_from_look_to_look() -> None:
    stable = traffic("stable", 9000, 90)
    first = judge(traffic("canary", 1000, 20), stable)
    assert first.state is not None
    assert set(first.state.metrics) == {"error_rate", "latency_p50", "latency_p95", "latency_p99"}
    data = json.loads(json.dumps(first.to_dict()))
    restored = JudgeState.from_dict(data["state"])
    assert restored == first.state
    bigger, more = traffic("canary", 2000, 40), traffic("stable", 18000, 180)
    a = judge(bigger, more, state=first.state)
    b = judge(bigger, more, state=restored)
    assert a.to_dict() == b.to_dict()
    errors = a.state.get("error_rate") if a.state is not None else None
    assert errors is not None
    assert errors.test.looks == 2
    assert errors.seen == (40, 2000, 180, 18000)


def test_each_metric_says_how_much_evidence_it_has_and_needs() -> None:
    """Enough canary requests to catch a regression exactly at each limit with power 0.9:
    most for +1 pp errors over stable's 1%, then p99 +20%; a step waits for all of them."""
    few = judge(traffic("canary", 1000, 10), STABLE)
    assert few.outcome is Outcome.PASS
    assert not few.enough
    assert not few.ready
    assert {m.name: (m.evidence, m.needed) for m in few.metrics} == {
        "error_rate": (1000, 4414),
        "latency_p50": (1000, 1001),
        "latency_p95": (1000, 920),
        "latency_p99": (1000, 2415),
    }
    lower = judge(traffic("canary", 1000, 10), STABLE, AnalysisSettings(power=0.8))
    assert lower.metric("error_rate").needed == 3684
    enough = judge(traffic("canary", 5000, 50), traffic("stable", 45000, 450))
    assert enough.enough
    assert enough.ready
    data = enough.to_dict()
    assert (data["enough"], data["waiting"]) == (True, False)
    assert data["metrics"][0]["evidence"] == 5000
    assert data["metrics"][0]["needed"] == 4400
    # a stable at 8% errors is noisier: +1 pp takes far more to tell
    noisy = judge(traffic("canary", 1000, 82), traffic("stable", 9000, 720))
    needed = noisy.metric("error_rate").needed
    assert needed is not None
    assert needed > 25_000


def test_the_confidence_is_split_over_every_tested_metric_of_every_function() -> None:
    strict = AnalysisSettings.parse({"metrics": {"error_rate": {"max_increase_pp": 0.2}}})
    canary, stable = traffic("canary", 1000, 3), traffic("stable", 9000, 0)
    assert judge(canary, stable, strict).reason.endswith("(p=0.0077, need p<0.0025)")
    three = judge(canary, stable, strict, functions=3)
    assert three.reason.endswith("(p=0.0077, need p<0.00083)")
    with pytest.raises(InvalidInput, match="functions must be a whole number >= 1"):
        judge(canary, stable, functions=0)


def test_a_real_change_within_half_the_limit_never_fails() -> None:
    """On a busy function a tiny change is provable; it is not a regression. Beyond half
    the limit, proven, it fails (the limit is what must be caught, not a free pass)."""
    stable = traffic("stable", 3_600_000, 36_000, latencies=9000)
    small = judge(traffic("canary", 400_000, 5_600, latencies=1000), stable)
    assert small.metric("error_rate").p_value is not None
    assert small.metric("error_rate").p_value < 1e-50
    assert small.metric("error_rate").outcome is Outcome.PASS
    assert EFFECT_FLOOR == 0.5
    within = judge(traffic("canary", 400_000, 6_800, latencies=1000), stable)
    assert within.metric("error_rate").outcome is Outcome.FAIL
    assert within.metric("error_rate").reason == (
        "canary errors 1.7% (6,800 of 400,000) vs stable 1% (36,000 of 3,600,000), +0.7 pp,"
        " limit +1 pp (within the limit, but proven worse than stable) (p<0.0001)"
    )


# -- the Tracker ------------------------------------------------------------------------

PASS = judge(traffic("canary", 1000, 10), STABLE)
FAIL = judge(traffic("canary", 1000, 40, scale=1.5), STABLE)
LOW = judge(traffic("canary", 12, 0), STABLE)
"""waiting: too little traffic to judge yet"""
UNSURE = judge(traffic("canary", 1000, 100), traffic("stable", 9000, 720))
"""inconclusive: +2 pp over a stable at 8%, not proven yet"""
TWO_STRIKES = AnalysisSettings(failure_limit=2)


def _run(verdicts: list[Verdict], settings: AnalysisSettings | None = None) -> list[Tracker]:
    tracker = Tracker.start(settings)
    out = []
    for v in verdicts:
        tracker = tracker.observe(v)
        out.append(tracker)
    return out


def test_the_verdicts_the_tracker_tests_use() -> None:
    assert (PASS.outcome, FAIL.outcome) == (Outcome.PASS, Outcome.FAIL)
    assert (LOW.outcome, LOW.waiting) == (Outcome.INCONCLUSIVE, True)
    assert (UNSURE.outcome, UNSURE.waiting) == (Outcome.INCONCLUSIVE, False)


def test_by_default_the_first_failed_interval_rolls_back() -> None:
    """The tests hold their level over every look: a second failed interval would only
    keep a bad canary serving one interval longer."""
    (t,) = _run([FAIL])
    assert t.action is Action.ROLLBACK
    assert t.reason == f"canary failed analysis for 1 interval: {FAIL.reason}"


def test_consecutive_failures_roll_back() -> None:
    first, second = _run([FAIL, FAIL], TWO_STRIKES)
    assert first.action is Action.CONTINUE
    assert first.reason.startswith(
        "canary failed analysis (1 of 2 consecutive failed intervals before rollback): canary"
        " errors 4%"
    )
    assert second.action is Action.ROLLBACK
    assert second.reason == f"canary failed analysis for 2 consecutive intervals: {FAIL.reason}"
    assert second.consecutive_failures == 2


@pytest.mark.parametrize(
    "between",
    [PASS, UNSURE, LOW],
    ids=["a pass", "an inconclusive interval", "an interval waiting for traffic"],
)
def test_failures_must_be_consecutive(between: Verdict) -> None:
    trackers = _run([FAIL, between, FAIL], TWO_STRIKES)
    assert [t.action for t in trackers] == [Action.CONTINUE] * 3
    assert trackers[-1].consecutive_failures == 1


def test_a_rollback_is_final() -> None:
    trackers = _run([FAIL, FAIL, PASS, PASS], TWO_STRIKES)
    assert [t.action for t in trackers] == [
        Action.CONTINUE,
        Action.ROLLBACK,
        Action.ROLLBACK,
        Action.ROLLBACK,
    ]
    assert trackers[-1].intervals == 4
    assert trackers[-1].reason == trackers[1].reason


def test_a_failure_limit_of_one_rolls_back_at_once() -> None:
    (t,) = _run([FAIL], AnalysisSettings(failure_limit=1))
    assert t.action is Action.ROLLBACK
    assert t.reason.startswith("canary failed analysis for 1 interval: ")


def test_too_many_inconclusive_intervals_pause() -> None:
    trackers = _run([UNSURE] * 7)
    assert [t.action for t in trackers] == [Action.CONTINUE] * 5 + [Action.PAUSE] * 2
    assert trackers[4].reason == (
        f"analysis inconclusive (5 of 5 intervals allowed): {UNSURE.reason}"
    )
    assert trackers[5].reason == f"analysis inconclusive for 6 intervals: {UNSURE.reason}"
    resumed = trackers[-1].observe(PASS)  # the canary turned out fine
    assert resumed.action is Action.CONTINUE
    assert resumed.consecutive_inconclusive == 0
    assert resumed.reason.startswith("canary passed analysis: canary errors 1%")


def test_waiting_for_traffic_is_not_counted_as_inconclusive() -> None:
    """Too little traffic yet is evidence still coming: the step waits for it (and the
    controller pauses a release whose evidence cannot come), the tracker does not count it."""
    trackers = _run([LOW] * 10)
    assert {t.action for t in trackers} == {Action.CONTINUE}
    assert trackers[-1].consecutive_inconclusive == 0
    assert trackers[-1].reason == (
        "waiting for evidence: too little traffic (canary 12 requests, need 200)"
    )
    # nor does it end a run of inconclusive intervals
    trackers = _run([UNSURE] * 3 + [LOW] * 3 + [UNSURE] * 3)
    assert [t.consecutive_inconclusive for t in trackers] == [1, 2, 3, 3, 3, 3, 4, 5, 6]
    assert trackers[-1].action is Action.PAUSE


def test_inconclusive_continue_policy_only_says_so() -> None:
    settings = AnalysisSettings(max_inconclusive=1, inconclusive=InconclusivePolicy.CONTINUE)
    trackers = _run([UNSURE] * 3, settings)
    assert [t.action for t in trackers] == [Action.CONTINUE] * 3
    assert trackers[-1].reason == (
        "analysis inconclusive for 3 intervals, continuing (inconclusive: continue):"
        f" {UNSURE.reason}"
    )


def test_a_fail_ends_a_run_of_inconclusive_intervals() -> None:
    trackers = _run([UNSURE] * 5 + [FAIL] + [UNSURE] * 5, TWO_STRIKES)
    assert all(t.action is Action.CONTINUE for t in trackers)
    assert trackers[-1].consecutive_inconclusive == 5


def test_tracker_state_round_trips() -> None:
    (*_, t) = _run([FAIL, UNSURE, LOW], TWO_STRIKES)
    data: dict[str, Any] = json.loads(json.dumps(t.to_dict()))
    assert Tracker.from_dict(data) == t
    with pytest.raises(InvalidInput, match="invalid tracker state"):
        Tracker.from_dict({**data, "action": "explode"})
    with pytest.raises(InvalidInput, match="invalid tracker state"):
        Tracker.from_dict({"intervals": 1})
