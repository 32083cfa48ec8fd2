"""The simulator reproduces the article's two claims with the real core."""

from __future__ import annotations

import pytest

from coalmine.core.errors import InvalidInput
from coalmine.simulation import SimulationParams, simulate


def test_article_numbers_request_mode_exposes_most_users_user_mode_about_ten_percent() -> None:
    # 5 users, 41 requests, 10% canary: the article's example, pooled over trials.
    r = simulate(SimulationParams(users=5, requests=41, percent=10, chain=3, trials=400, seed=7))
    assert r.request.exposed_user_fraction > 0.6
    assert 0.05 < r.user.exposed_user_fraction < 0.15
    assert r.user.mixed_chain_fraction == 0
    assert r.request.mixed_chain_fraction > 0.2


def test_at_scale_user_mode_exposes_the_cohort_and_never_mixes() -> None:
    r = simulate(SimulationParams(users=10_000, requests=60_000, percent=10, chain=3, seed=3))
    assert 0.09 < r.user.exposed_user_fraction < 0.11
    assert 0.09 < r.user.canary_request_fraction < 0.11
    assert r.user.mixed_chains == 0
    assert r.request.exposed_user_fraction > 0.8
    # each of 3 hops rolls on its own: P(any canary) = 1 - 0.9^3 = 0.271
    assert r.request.canary_request_fraction == pytest.approx(0.271, abs=0.01)
    # all hops canary happens 0.1%: mixed = 0.271 - 0.001
    assert r.request.mixed_chain_fraction == pytest.approx(0.270, abs=0.01)


def test_single_function_chain_cannot_mix() -> None:
    r = simulate(SimulationParams(users=100, requests=2_000, chain=1))
    assert r.user.mixed_chains == 0
    assert r.request.mixed_chains == 0
    assert r.request.canary_requests > 0


def test_same_seed_same_numbers_other_seed_other_cohort() -> None:
    p = SimulationParams(users=500, requests=5_000)
    assert simulate(p).to_dict() == simulate(p).to_dict()
    other = simulate(SimulationParams(users=500, requests=5_000, seed=2))
    assert other.to_dict() != simulate(p).to_dict()


def test_skewed_requests_concentrate_on_few_users() -> None:
    uniform = simulate(SimulationParams(users=2_000, requests=4_000))
    skewed = simulate(SimulationParams(users=2_000, requests=4_000, skew=1.2))
    assert skewed.user.active_users < uniform.user.active_users


def test_zero_and_full_exposure() -> None:
    none = simulate(SimulationParams(users=200, requests=1_000, percent=0))
    assert none.user.canary_requests == none.request.canary_requests == 0
    full = simulate(SimulationParams(users=200, requests=1_000, percent=100))
    assert full.user.exposed_user_fraction == full.request.exposed_user_fraction == 1.0
    assert full.request.mixed_chains == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"users": 0}, "--users"),
        ({"requests": 0}, "--requests"),
        ({"percent": 100.5}, "--percent"),
        ({"percent": 1.001}, "two decimals"),
        ({"chain": 0}, "--chain"),
        ({"skew": -1}, "--skew"),
        ({"trials": 0}, "--trials"),
        ({"requests": 10_000_000, "chain": 10}, "50 million"),
    ],
)
def test_bad_parameters_say_what_to_fix(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        simulate(SimulationParams(**kwargs))  # type: ignore[arg-type]
