"""The Lambda alias a release keeps: properties over every phase, mode and exposure, and
which functions qualify."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalmine.core.alias import (
    AliasedFunction,
    AliasRouting,
    alias_routing,
    plan_aliases,
    validate_alias_name,
)
from coalmine.core.bucketing import BUCKETS
from coalmine.core.errors import InvalidInput
from coalmine.core.model import ROLLED_BACK_PHASES, Phase, RouteMode

ARN = "arn:aws:lambda:eu-west-1:123456789012:function:place-order"
FN = AliasedFunction("place-order", ARN, "3", "4")

phases = st.sampled_from(list(Phase))
modes = st.sampled_from(list(RouteMode))
exposures = st.integers(0, BUCKETS)
versions = st.integers(1, 10**6).map(str)


@st.composite
def functions(draw: st.DrawFn) -> AliasedFunction:
    baseline = draw(versions)
    candidate = draw(versions.filter(lambda v: v != baseline))
    return AliasedFunction("fn", ARN, baseline, candidate)


@given(phases, modes, exposures, functions())
def test_the_alias_routes_between_the_release_s_two_versions_only(
    phase: Phase, mode: RouteMode, exposure: int, fn: AliasedFunction
) -> None:
    r = alias_routing(phase, mode, exposure, fn)
    assert r.version in (fn.baseline, fn.candidate)
    assert set(r.weights) <= {fn.candidate}
    assert r.version not in r.weights, "AWS refuses a weight on the alias's own version"
    assert all(0 <= w < 1 for w in r.weights.values())


@given(phases, exposures, functions())
def test_user_mode_never_has_weights(phase: Phase, exposure: int, fn: AliasedFunction) -> None:
    r = alias_routing(phase, RouteMode.USER, exposure, fn)
    assert r.weights == {}
    promoted = phase in (Phase.PROMOTING, Phase.PROMOTED)
    assert r.version == (fn.candidate if promoted else fn.baseline)


@given(st.sampled_from(sorted(ROLLED_BACK_PHASES)), modes, exposures, functions())
def test_a_rollback_resets_the_alias_to_the_baseline(
    phase: Phase, mode: RouteMode, exposure: int, fn: AliasedFunction
) -> None:
    assert alias_routing(phase, mode, exposure, fn) == AliasRouting(fn.baseline)


@given(st.sampled_from([Phase.PROMOTING, Phase.PROMOTED]), modes, exposures, functions())
def test_promotion_puts_the_alias_on_the_candidate_alone(
    phase: Phase, mode: RouteMode, exposure: int, fn: AliasedFunction
) -> None:
    assert alias_routing(phase, mode, exposure, fn) == AliasRouting(fn.candidate)


@given(st.sampled_from([Phase.PENDING, Phase.RUNNING, Phase.PAUSED]), exposures, functions())
def test_request_mode_weights_are_the_exposure(
    phase: Phase, exposure: int, fn: AliasedFunction
) -> None:
    r = alias_routing(phase, RouteMode.REQUEST, exposure, fn)
    if exposure == BUCKETS:
        assert r == AliasRouting(fn.candidate)
    elif exposure == 0:
        assert r == AliasRouting(fn.baseline)
    else:
        assert r.version == fn.baseline
        assert r.weights == {fn.candidate: exposure / BUCKETS}


@given(st.lists(st.integers(1, BUCKETS - 1), min_size=2, unique=True).map(sorted), functions())
def test_request_mode_weights_grow_with_each_step(steps: list[int], fn: AliasedFunction) -> None:
    weights = [alias_routing(Phase.RUNNING, RouteMode.REQUEST, e, fn).weights for e in steps]
    shares = [w[fn.candidate] for w in weights]
    assert shares == sorted(shares)
    assert len(set(shares)) == len(shares)


def test_the_canonical_steps() -> None:
    def at(phase: Phase, mode: RouteMode, exposure: int) -> str:
        return alias_routing(phase, mode, exposure, FN).describe()

    assert at(Phase.RUNNING, RouteMode.REQUEST, 1000) == "version 3, 10% to version 4"
    assert at(Phase.PAUSED, RouteMode.REQUEST, 2500) == "version 3, 25% to version 4"
    assert at(Phase.RUNNING, RouteMode.REQUEST, 10000) == "version 4"
    assert at(Phase.RUNNING, RouteMode.USER, 5000) == "version 3"
    assert at(Phase.ROLLING_BACK, RouteMode.REQUEST, 5000) == "version 3"
    assert at(Phase.PROMOTED, RouteMode.USER, 10000) == "version 4"


# -- comparing alias states ------------------------------------------------------------

weights = st.dictionaries(versions, st.floats(0, 0.9999), max_size=3)


@given(versions, weights, versions, weights)
def test_same_is_symmetric(v1: str, w1: dict[str, float], v2: str, w2: dict[str, float]) -> None:
    a, b = AliasRouting(v1, w1), AliasRouting(v2, w2)
    assert a.same(b) == b.same(a)
    assert a.same(a)


def test_same_ignores_zero_weights_and_rounding_but_not_a_real_difference() -> None:
    assert AliasRouting("1", {"2": 0.0}).same(AliasRouting("1"))
    assert AliasRouting("1", {"2": 0.1}).same(AliasRouting("1", {"2": 0.1 + 1e-9}))
    assert not AliasRouting("1", {"2": 0.1}).same(AliasRouting("1", {"2": 0.1001}))
    assert not AliasRouting("1", {"2": 0.1}).same(AliasRouting("1"))
    assert not AliasRouting("1").same(AliasRouting("2"))
    assert AliasRouting("1", {"2": 0.25}).to_dict() == {"version": "1", "weights": {"2": 0.25}}


# -- alias names -------------------------------------------------------------------------


@given(st.from_regex(r"[A-Za-z_-][A-Za-z0-9_-]{0,127}", fullmatch=True))
def test_lambda_alias_names_are_accepted(name: str) -> None:
    assert validate_alias_name(name) == name


@pytest.mark.parametrize("bad", ["", "7", "123", "a" * 129, "live!", "li ve", "$LATEST", None])
def test_bad_alias_names_say_what_is_accepted(bad: object) -> None:
    with pytest.raises(InvalidInput, match="1-128 letters, digits, '-' or '_', not only digits"):
        validate_alias_name(bad)


# -- which functions have their alias kept ---------------------------------------------


def test_plan_keeps_two_published_versions_of_one_lambda_function() -> None:
    plan = plan_aliases(
        "live",
        {
            "place-order": (f"{ARN}:3", f"{ARN}:4"),
            "notify-user": ("lambda:notify-user:1", "lambda:notify-user:2"),
            "mixed-forms": (
                "arn:aws:lambda:eu-west-1:123456789012:function:mixed-forms:5",
                "lambda:mixed-forms:6",
            ),
        },
    )
    assert plan.alias == "live"
    assert plan.functions == (
        AliasedFunction(
            "mixed-forms", "arn:aws:lambda:eu-west-1:123456789012:function:mixed-forms", "5", "6"
        ),
        AliasedFunction("notify-user", "notify-user", "1", "2"),
        AliasedFunction("place-order", ARN, "3", "4"),
    )
    assert plan.skipped == {}


@pytest.mark.parametrize(
    ("baseline", "candidate", "why"),
    [
        ("shop.cart:handler", f"{ARN}:4", "not both Lambda versions"),
        (f"{ARN}:3", "https://cart-v2.internal/", "not both Lambda versions"),
        ("lambda:cart:1", "lambda:other:2", "different Lambda functions (cart, other)"),
        (
            f"{ARN}:3",
            "arn:aws:lambda:us-east-1:123456789012:function:place-order:4",
            "different Lambda functions",
        ),
        (f"{ARN}:live", f"{ARN}:4", f"{ARN}:live names an alias or $LATEST"),
        (f"{ARN}:3", f"{ARN}:$LATEST", "names an alias or $LATEST"),
        (f"{ARN}:3", f"{ARN}:3", "the same Lambda version (3)"),
    ],
)
def test_plan_skips_what_an_alias_cannot_route_and_says_why(
    baseline: str, candidate: str, why: str
) -> None:
    plan = plan_aliases("live", {"cart": (baseline, candidate)})
    assert plan.functions == ()
    assert why in plan.skipped["cart"]


def test_plan_refuses_a_bad_alias_name() -> None:
    with pytest.raises(InvalidInput, match="invalid Lambda alias name '1'"):
        plan_aliases("1", {})
