"""Whom an alarm's dimensions blame: the table of cases, and the properties of the rule."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalmine.core.alarms import AlarmEvaluation, EvaluationState
from coalmine.core.attribution import (
    AlarmMetric,
    Blame,
    FunctionScope,
    ReleaseScope,
    attribute,
    attribute_metric,
)
from coalmine.core.forwarding import LambdaRef

ARN = "arn:aws:lambda:us-east-1:123456789012:function"
SCOPE = ReleaseScope(
    app="food-ordering",
    release="food-ordering-7",
    functions=(
        FunctionScope(
            "notify-user",
            "v1",
            "v1",
            LambdaRef(f"{ARN}:notify-user", "3"),
            LambdaRef(f"{ARN}:notify-user", "3"),
        ),
        FunctionScope(
            "place-order",
            "v2",
            "v1",
            LambdaRef(f"{ARN}:place-order", "7"),
            LambdaRef(f"{ARN}:place-order", "6"),
        ),
        FunctionScope("pay", "v2", "v1"),  # HTTP targets: no Lambda dimensions name them
    ),
)


def lam(**dims: str) -> AlarmMetric:
    return AlarmMetric("AWS/Lambda", "Errors", dims)


def emf(**dims: str) -> AlarmMetric:
    return AlarmMetric("coalmine", "errors", {"app": "food-ordering", **dims})


CASES: list[tuple[str, list[AlarmMetric], Blame, str]] = [
    (
        "a Lambda version resource",
        [lam(FunctionName="place-order", Resource="place-order:7")],
        Blame.CANDIDATE,
        "Resource=place-order:7 is the candidate of place-order, v2",
    ),
    (
        "the baseline's version resource",
        [lam(FunctionName="place-order", Resource="place-order:6")],
        Blame.STABLE,
        "Resource=place-order:6 is the baseline (stable) of place-order, v1",
    ),
    (
        "an alias resource",
        [lam(FunctionName="place-order", Resource="place-order:live")],
        Blame.SHARED,
        "alias-wide: Resource=place-order:live counts every version behind alias live",
    ),
    (
        "an alias invocation's executed version",
        [lam(FunctionName="place-order", Resource="place-order:live", ExecutedVersion="7")],
        Blame.CANDIDATE,
        "ExecutedVersion=7 is the candidate of place-order",
    ),
    (
        "the function by name",
        [lam(FunctionName="place-order")],
        Blame.SHARED,
        "function-wide: FunctionName=place-order counts every version",
    ),
    (
        "a version of an unchanged function",
        [lam(FunctionName="notify-user", Resource="notify-user:3")],
        Blame.SHARED,
        "notify-user v1, which this release does not change: it runs in both channels",
    ),
    (
        "a version neither candidate nor baseline",
        [lam(FunctionName="place-order", Resource="place-order:5")],
        Blame.SHARED,
        "Lambda version 5 of place-order, neither the candidate nor the baseline",
    ),
    (
        "another Lambda function",
        [lam(FunctionName="billing", Resource="billing:7")],
        Blame.SHARED,
        "names Lambda function billing, which runs no version of release food-ordering-7",
    ),
    (
        "account-wide Lambda metrics",
        [lam()],
        Blame.SHARED,
        "account-wide",
    ),
    (
        "coalmine's canary channel",
        [emf(function="place-order", version="v2", channel="canary")],
        Blame.CANDIDATE,
        "channel=canary is the canary cohort of release food-ordering-7",
    ),
    (
        "the canary channel of an unchanged function",
        [emf(function="notify-user", version="v1", channel="canary")],
        Blame.CANDIDATE,
        "channel=canary",
    ),
    (
        "coalmine's stable channel",
        [emf(function="place-order", version="v1", channel="stable")],
        Blame.STABLE,
        "channel=stable",
    ),
    (
        "a candidate version without a channel",
        [emf(function="pay", version="v2")],
        Blame.CANDIDATE,
        "version=v2 is the candidate of pay",
    ),
    (
        "another app's canary",
        [AlarmMetric("coalmine", "errors", {"app": "billing", "channel": "canary"})],
        Blame.SHARED,
        "app=billing is another app than food-ordering",
    ),
    (
        "another service",
        [AlarmMetric("AWS/SQS", "ApproximateAgeOfOldestMessage", {"QueueName": "orders"})],
        Blame.SHARED,
        "AWS/SQS ApproximateAgeOfOldestMessage (QueueName=orders) names no version",
    ),
    (
        "candidate and stable compared in one expression",
        [
            lam(FunctionName="place-order", Resource="place-order:7"),
            lam(FunctionName="place-order", Resource="place-order:6"),
        ],
        Blame.SHARED,
        "together: comparing them is the judge's",
    ),
    (
        "candidate errors over alias invocations",
        [
            lam(FunctionName="place-order", Resource="place-order:7"),
            lam(FunctionName="place-order", Resource="place-order:live"),
        ],
        Blame.CANDIDATE,
        "its dimensions name the candidate: Resource=place-order:7",
    ),
    (
        "stable errors over alias invocations",
        [
            lam(FunctionName="place-order", Resource="place-order:6"),
            lam(FunctionName="place-order", Resource="place-order:live"),
        ],
        Blame.STABLE,
        "its dimensions name stable: Resource=place-order:6",
    ),
    ("a composite alarm", [], Blame.SHARED, "no metric dimensions to attribute by"),
]


@pytest.mark.parametrize(
    ("metrics", "blame", "why"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_kind_of_dimension_set_blames_as_documented(
    metrics: list[AlarmMetric], blame: Blame, why: str
) -> None:
    got = attribute(metrics, SCOPE)
    assert got.blame is blame
    assert why in got.reason


def test_the_emf_namespace_is_the_scopes() -> None:
    metric = emf(function="place-order", version="v2", channel="canary")
    assert attribute_metric(metric, SCOPE).blame is Blame.CANDIDATE
    moved = replace(SCOPE, namespace="shop/coalmine")
    assert attribute_metric(metric, moved).blame is Blame.SHARED
    assert attribute_metric(replace(metric, namespace="shop/coalmine"), moved).blame is (
        Blame.CANDIDATE
    )


def test_only_a_new_candidate_blame_or_none_rolls_back() -> None:
    def firing(blame: Blame | None) -> AlarmEvaluation:
        return AlarmEvaluation("errors", EvaluationState.FIRING, "x", since=1.0, blame=blame)

    assert [firing(b).rolls_back for b in (None, *Blame)] == [True, True, False, False]
    assert firing(Blame.SHARED).to_dict() == {
        "name": "errors",
        "state": "firing",
        "detail": "x",
        "value": None,
        "since": 1.0,
        "blame": "shared",
    }
    assert set(AlarmEvaluation("p99", EvaluationState.OK, "ok").to_dict()) == {
        "name",
        "state",
        "detail",
        "value",
    }


# -- properties -------------------------------------------------------------------------

KEYS = ["FunctionName", "Resource", "ExecutedVersion", "app", "function", "version", "channel"]
VALUES = [
    "place-order",
    "place-order:7",
    "place-order:6",
    "place-order:live",
    "7",
    "6",
    "live",
    "notify-user",
    "notify-user:3",
    "3",
    "pay",
    "food-ordering",
    "billing",
    "v1",
    "v2",
    "canary",
    "stable",
]
metrics = st.builds(
    AlarmMetric,
    st.sampled_from(["AWS/Lambda", "coalmine", "AWS/SQS"]),
    st.just("Errors"),
    st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=4),
)
alias_wide = st.builds(
    lam,
    FunctionName=st.sampled_from(["place-order", "notify-user", "billing"]),
    Resource=st.sampled_from(["place-order:live", "place-order", "notify-user:live"]),
)


def names_candidate(metric: AlarmMetric, scope: ReleaseScope) -> bool:
    """Whether some dimension names a changed function's candidate, or the canary channel."""
    dims = metric.dimensions
    if metric.namespace == scope.namespace:
        if dims.get("channel") == "canary":
            return True
        return any(
            f.changed and dims.get("function") == f.function and dims.get("version") == f.candidate
            for f in scope.functions
        )
    if metric.namespace != "AWS/Lambda":
        return False
    named = {dims.get("ExecutedVersion"), (dims.get("Resource") or "").partition(":")[2]}
    return any(
        f.changed and f.candidate_lambda is not None and f.candidate_lambda.qualifier in named
        for f in scope.functions
    )


def swapped(scope: ReleaseScope) -> ReleaseScope:
    """The same release the other way round: candidates are baselines and back."""
    return replace(
        scope,
        functions=tuple(
            FunctionScope(
                f.function, f.baseline, f.candidate, f.baseline_lambda, f.candidate_lambda
            )
            for f in scope.functions
        ),
    )


MIRROR = {Blame.CANDIDATE: Blame.STABLE, Blame.STABLE: Blame.CANDIDATE, Blame.SHARED: Blame.SHARED}


@given(st.lists(metrics, max_size=5), st.randoms())
def test_the_order_of_an_alarms_metrics_does_not_matter(
    found: list[AlarmMetric], rng: random.Random
) -> None:
    shuffled = list(found)
    rng.shuffle(shuffled)
    assert attribute(shuffled, SCOPE).blame is attribute(found, SCOPE).blame


@given(st.lists(metrics, max_size=5))
def test_the_candidate_is_blamed_only_when_a_dimension_names_it(found: list[AlarmMetric]) -> None:
    if attribute(found, SCOPE).blame is Blame.CANDIDATE:
        assert any(names_candidate(m, SCOPE) for m in found)


@given(st.lists(metrics, max_size=5))
def test_swapping_candidate_and_baseline_swaps_the_blame(found: list[AlarmMetric]) -> None:
    # a channel names a cohort, not a version: the same whichever version is the candidate
    found = [
        replace(m, dimensions={k: v for k, v in m.dimensions.items() if k != "channel"})
        for m in found
    ]
    assert attribute(found, swapped(SCOPE)).blame is MIRROR[attribute(found, SCOPE).blame]


@given(st.lists(metrics, min_size=1, max_size=5), alias_wide)
def test_an_alias_wide_metric_never_changes_a_blame_nor_makes_one(
    found: list[AlarmMetric], alias: AlarmMetric
) -> None:
    assert attribute([alias], SCOPE).blame is Blame.SHARED
    before = attribute(found, SCOPE).blame
    after = attribute([*found, alias], SCOPE).blame
    assert after is before


@given(st.lists(metrics, max_size=5))
def test_adding_a_stable_metric_never_makes_the_candidate_blamed(found: list[AlarmMetric]) -> None:
    stable = lam(FunctionName="place-order", Resource="place-order:6")
    assert attribute([*found, stable], SCOPE).blame is not Blame.CANDIDATE
