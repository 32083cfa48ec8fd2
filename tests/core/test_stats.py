"""The judge's statistics: each look is an e-value under the null, so the test holds its level
over every look; overdispersion is measured and paid for; the evidence needed behaves."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalmine.core.errors import InvalidInput
from coalmine.core.stats import (
    GRID_LOG_RATIOS,
    GRID_LOG_WEIGHTS,
    RateTest,
    evidence_needed,
    look_log_ratio,
)


def _hypergeometric(x: int, total: int, events: int, drawn: int) -> float:
    return math.comb(events, x) * math.comb(total - events, drawn - x) / math.comb(total, drawn)


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 60),
    m=st.integers(1, 200),
    k_share=st.floats(0.0, 1.0),
)
def test_each_look_is_an_e_value_when_the_canary_is_no_worse(
    n: int, m: int, k_share: float
) -> None:
    """Given the look's events, the canary's count is hypergeometric if both channels are
    alike; the likelihood ratio at every grid ratio then has expectation at most 1 (the
    binomial it assumes is more spread out: Hoeffding's convex order)."""
    k = round(k_share * (n + m))
    rho = n / (n + m)
    for u in GRID_LOG_RATIOS[::5]:
        expected = math.fsum(
            _hypergeometric(x, n + m, k, n) * math.exp(look_log_ratio(u, x, k, rho))
            for x in range(max(0, k - m), min(k, n) + 1)
        )
        assert expected <= 1 + 1e-9


def test_the_mixture_weights_sum_to_one() -> None:
    assert math.fsum(math.exp(w) for w in GRID_LOG_WEIGHTS) == pytest.approx(1.0)
    assert RateTest().log_e == pytest.approx(0.0, abs=1e-12)
    assert RateTest().p_value == 1.0


def _aa_look(rng: random.Random, test: RateTest, n: int, m: int, rate: float) -> RateTest:
    x = sum(rng.random() < rate for _ in range(n))
    y = sum(rng.random() < rate for _ in range(m))
    return test.observe(x, n, y, m)


def test_a_canary_like_stable_rarely_crosses_over_many_looks() -> None:
    """Ville's inequality: over 100 looks, A/A runs cross alpha = 0.05 at most 5% of the
    time (the binomial here, fixed seed: the count is deterministic)."""
    rng = random.Random(11)
    crossed = 0
    for _ in range(150):
        test = RateTest()
        for look in range(100):
            # the rate moves between looks (a shared fault): the test is per look
            test = _aa_look(rng, test, 30, 270, 0.02 if look % 20 < 10 else 0.08)
        crossed += test.p_value < 0.05
    assert crossed <= 7  # 5% of 150 is 7.5


def test_a_worse_canary_is_found() -> None:
    rng = random.Random(5)
    test = RateTest()
    seen = []
    for _ in range(40):
        x = sum(rng.random() < 0.04 for _ in range(50))
        y = sum(rng.random() < 0.01 for _ in range(450))
        test = test.observe(x, 50, y, 450)
        seen.append(test.p_value)
    assert seen[0] > 0.01
    assert seen[-1] < 1e-6
    assert all(later < 0.0025 for later in seen[-10:])
    assert 3 < test.ratio() < 5


def test_errors_on_a_stable_with_none_are_strong_evidence() -> None:
    test = RateTest().observe(5, 1000, 0, 9000)
    assert test.p_value < 0.001
    assert RateTest().observe(0, 1000, 0, 9000) == RateTest(
        canary_trials=1000, stable_trials=9000
    ), "no events: nothing to learn"


def test_a_look_with_one_side_empty_changes_no_ratio() -> None:
    test = RateTest().observe(3, 100, 0, 0).observe(0, 0, 7, 700)
    assert test.log_lr == RateTest().log_lr
    assert test.looks == 0
    assert (test.canary_events, test.canary_trials, test.stable_events) == (3, 100, 7)


def test_overdispersion_is_measured_and_tempers_the_evidence() -> None:
    """Correlated requests (one user's burst of errors in one channel) make the canary's
    share of events swing more than the binomial allows: phi grows, each look counts less."""
    calm, bursty = RateTest(), RateTest()
    rng = random.Random(2)
    for look in range(40):
        calm = _aa_look(rng, calm, 100, 900, 0.05)
        # same rates on average, but the events come in bursts of 10 on one side
        x = 10 * sum(rng.random() < 0.05 for _ in range(10))
        y = 10 * sum(rng.random() < 0.05 for _ in range(90))
        bursty = bursty.observe(min(x, 100), 100, min(y, 900), 900)
        assert look < 2 or bursty.phi >= 1.0
    assert calm.phi < 1.4
    assert bursty.phi > 3
    need_calm = evidence_needed(0.05, 0.06, 0.1, 0.0025, 0.8, calm.phi)
    need_bursty = evidence_needed(0.05, 0.06, 0.1, 0.0025, 0.8, bursty.phi)
    assert need_calm is not None
    assert need_bursty is not None
    assert need_bursty > 2 * need_calm


def test_sparse_correlated_events_are_measured_in_batches_of_looks() -> None:
    """A few errors a look, each failing user failing 3 requests in a row: no single look
    says anything about the spread, batches of looks do."""
    rng = random.Random(8)
    test = RateTest()
    for _ in range(300):
        x = 3 * sum(rng.random() < 0.01 for _ in range(16))
        y = 3 * sum(rng.random() < 0.01 for _ in range(150))
        test = test.observe(x, 48, y, 450)
    assert test.residual_looks > 40
    assert test.phi > 2
    independent = RateTest()
    for _ in range(300):
        independent = _aa_look(rng, independent, 48, 450, 0.01)
    assert independent.phi < 1.4


@pytest.mark.parametrize(
    ("stable_rate", "canary_rate", "share", "power", "phi"),
    [(0.01, 0.02, 0.1, 0.8, 1.0), (0.08, 0.09, 0.1, 0.8, 1.0), (0.0001, 0.0101, 0.1, 0.8, 1.0)],
)
def test_evidence_needed_grows_with_what_is_asked(
    stable_rate: float, canary_rate: float, share: float, power: float, phi: float
) -> None:
    base = evidence_needed(stable_rate, canary_rate, share, 0.0025, power, phi)
    assert base is not None
    assert base > 0
    smaller_effect = evidence_needed(
        stable_rate, (stable_rate + canary_rate) / 2, share, 0.0025, power, phi
    )
    more_power = evidence_needed(stable_rate, canary_rate, share, 0.0025, 0.95, phi)
    more_sure = evidence_needed(stable_rate, canary_rate, share, 0.0001, power, phi)
    noisier = evidence_needed(stable_rate, canary_rate, share, 0.0025, power, 2.0)
    for bigger in (smaller_effect, more_power, more_sure, noisier):
        assert bigger is not None
        assert bigger > base
    assert evidence_needed(stable_rate, stable_rate, share, 0.0025, power) is None


def test_evidence_needed_gives_the_power_it_promises() -> None:
    """+1 pp over 1% at 10% canary, alpha 0.0025, power 0.8: about 3,700 canary requests.
    Looking every 250 canary requests and stopping once caught or once the evidence
    (recomputed with the test's own phi, as the judge does) is in, at least 80% of such
    canaries are caught (fixed seed: the count is deterministic)."""
    assert evidence_needed(0.01, 0.02, 0.1, 0.0025, 0.8) == pytest.approx(3671, abs=5)
    rng = np.random.default_rng(1)
    caught = 0
    for _ in range(200):
        test, served = RateTest(), 0
        while True:
            x, y = int(rng.binomial(250, 0.02)), int(rng.binomial(2250, 0.01))
            test, served = test.observe(x, 250, y, 2250), served + 250
            rate = (test.stable_events + 0.5) / (test.stable_trials + 1)
            needed = evidence_needed(rate, rate + 0.01, 0.1, 0.0025, 0.8, test.phi)
            assert needed is not None
            if test.p_value < 0.0025 or served >= needed:
                break
        caught += test.p_value < 0.0025
    assert caught >= 160


def test_bad_arguments_and_counts_are_refused() -> None:
    with pytest.raises(InvalidInput, match="canary events"):
        RateTest().observe(5, 4, 0, 10)
    with pytest.raises(InvalidInput, match="stable trials"):
        RateTest().observe(0, 4, 0, -1)
    with pytest.raises(InvalidInput, match="share, alpha and power"):
        evidence_needed(0.01, 0.02, 1.0, 0.01, 0.8)


def test_a_test_round_trips_through_json_and_is_validated() -> None:
    test = RateTest().observe(4, 100, 10, 900).observe(6, 120, 9, 880)
    data = json.loads(json.dumps(test.to_dict()))
    assert RateTest.from_dict(data) == test
    for bad in (
        {**data, "log_lr": data["log_lr"][:-1]},
        {**data, "log_lr": [*data["log_lr"][:-1], "nan"]},
        {**data, "canary": [5, 4]},
        {**data, "looks": -1},
        {**data, "residuals": -1.0},
        {k: v for k, v in data.items() if k != "stable"},
        [],
    ):
        with pytest.raises(InvalidInput, match=r"rate test|canary"):
            RateTest.from_dict(bad)  # type: ignore[arg-type]
