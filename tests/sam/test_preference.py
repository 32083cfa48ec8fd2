"""Globals merged by SAM's rules, one release chosen from many preferences, names made valid."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalmine.core.model import NAME_PATTERN
from coalmine.core.strategy import PRESETS, StrategyError, parse_strategy
from coalmine.integrations.sam.merge import merge_globals
from coalmine.integrations.sam.names import app_name_from, name_from
from coalmine.integrations.sam.preference import (
    FunctionPreference,
    caution,
    choose_alias,
    choose_hooks,
    choose_strategy,
    collect_alarms,
    deployment_config_strategy,
)

SCALARS = st.one_of(st.text(max_size=5), st.integers(), st.booleans())
KEYS = st.sampled_from(["A", "B", "C", "D"])
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, min_size=2, max_size=3)
    ),
    max_leaves=6,
)
PROPERTIES = st.dictionaries(KEYS, VALUES, max_size=4)


def test_merge_follows_sams_rules() -> None:
    globals_ = {
        "Runtime": "python3.11",
        "Environment": {"Variables": {"TABLE": "orders", "STAGE": "dev"}},
        "Layers": ["base"],
        "DeploymentPreference": {"Type": "Linear10PercentEvery1Minute", "Alarms": ["g"]},
        "CodeUri": "s3://bucket/key",
    }
    local = {
        "Runtime": "python3.12",
        "Environment": {"Variables": {"STAGE": "prod"}},
        "Layers": ["extra"],
        "DeploymentPreference": {"Fn::If": ["IsProd", {"Type": "AllAtOnce"}, {"Enabled": False}]},
        "CodeUri": {"Bucket": "b", "Key": "k"},
    }
    assert merge_globals(globals_, local) == {
        "Runtime": "python3.12",
        "Environment": {"Variables": {"TABLE": "orders", "STAGE": "prod"}},
        "Layers": ["base", "extra"],
        # an intrinsic is a scalar to the merge: it replaces the global mapping whole
        "DeploymentPreference": local["DeploymentPreference"],
        "CodeUri": {"Bucket": "b", "Key": "k"},
    }
    assert globals_["Layers"] == ["base"], "the merge copies, never changes the template"


@given(PROPERTIES, PROPERTIES)
def test_merge_keeps_every_key_and_the_functions_scalars(
    globals_: dict[str, Any], local: dict[str, Any]
) -> None:
    merged = merge_globals(globals_, local)
    assert set(merged) == set(globals_) | set(local)
    for key, value in local.items():
        if not isinstance(value, dict | list):
            assert merged[key] == value
        elif isinstance(value, list) and isinstance(globals_.get(key), list):
            assert merged[key] == globals_[key] + value
    for key in set(globals_) - set(local):
        assert merged[key] == globals_[key]
    assert merge_globals({}, local) == local
    assert merge_globals(globals_, {}) == globals_


def pref(function: str, strategy: str | None = None, **kw: Any) -> FunctionPreference:
    parsed = parse_strategy(strategy) if strategy else None
    return FunctionPreference(function, strategy=parsed, strategy_label=strategy or "", **kw)


@given(st.permutations(sorted(PRESETS)))
def test_the_most_cautious_strategy_wins_whatever_the_order(names: list[str]) -> None:
    prefs = [pref(f"f{i}", name) for i, name in enumerate(names)]
    strategy, notes = choose_strategy(prefs)
    assert strategy is not None
    # 10% first, then the longest first step: 30 minutes
    assert strategy.name == "Canary10Percent30Minutes"
    assert len(notes) == 1
    assert "Canary10Percent30Minutes wins as the most cautious" in notes[0]
    assert all(caution(strategy) <= caution(p.strategy) for p in prefs if p.strategy)


def test_caution_orders_by_first_exposure_then_first_hold_then_length() -> None:
    ordered = sorted(
        (
            parse_strategy(n)
            for n in (
                "AllAtOnce",
                "Linear10PercentEvery10Minutes",
                "Canary5Percent1Minute",
                "Canary10Percent10Minutes",
            )
        ),
        key=caution,
    )
    assert [s.name for s in ordered] == [
        "Canary5Percent1Minute",  # 5% first
        "Linear10PercentEvery10Minutes",  # 10% for 10 minutes, and 90 minutes in all
        "Canary10Percent10Minutes",  # 10% for 10 minutes, 10 minutes in all
        "AllAtOnce",
    ]


def test_agreeing_functions_make_no_notes() -> None:
    prefs = [
        pref(
            "a",
            "Canary10Percent5Minutes",
            alias="live",
            alarms=("x",),
            hooks={"before_allow_traffic": "h"},
        ),
        pref(
            "b",
            "CodeDeployDefault.LambdaCanary10Percent5Minutes",
            alias="live",
            alarms=("x",),
            hooks={"before_allow_traffic": "h"},
        ),
    ]
    assert choose_strategy(prefs)[1] == []
    assert collect_alarms(prefs) == (["x"], [])
    assert choose_hooks(prefs, "a") == ({"before_allow_traffic": "h"}, [])
    assert choose_alias(prefs) == ("live", [])


def test_no_readable_strategy_keeps_the_default_and_says_so() -> None:
    strategy, notes = choose_strategy([pref("a"), pref("b")])
    assert strategy is None
    assert "keeps coalmine's default strategy (Canary10Percent5Minutes)" in notes[0]


def test_hooks_come_from_the_winner_else_the_first_with_one() -> None:
    prefs = [
        pref("a", hooks={"before_allow_traffic": "a-check"}),
        pref("b", hooks={"before_allow_traffic": "b-check", "after_allow_traffic": "b-after"}),
    ]
    hooks, notes = choose_hooks(prefs, winner="b")
    assert hooks == {"before_allow_traffic": "b-check", "after_allow_traffic": "b-after"}
    assert "(a: a-check)" in notes[0]
    assert "(the function whose strategy won)" in notes[0]
    assert "(a: none)" in notes[1]
    hooks, notes = choose_hooks(prefs, winner=None)
    assert hooks["before_allow_traffic"] == "a-check"
    assert "(the first function in the template with one)" in notes[0]


def test_the_alias_most_functions_use_wins_and_a_tie_goes_to_the_first() -> None:
    assert (
        choose_alias([pref("a", alias="x"), pref("b", alias="y"), pref("c", alias="y")])[0] == "y"
    )
    assert choose_alias([pref("a", alias="x"), pref("b", alias="y")])[0] == "x"
    alias, notes = choose_alias([pref("a")])
    assert alias is None
    assert "release.lambda_alias is left out" in notes[0]


@pytest.mark.parametrize(
    ("routing", "name"),
    [
        ({"Type": "AllAtOnce"}, "AllAtOnce"),
        (
            {
                "Type": "TimeBasedCanary",
                "TimeBasedCanary": {"CanaryPercentage": 5, "CanaryInterval": 20},
            },
            "Canary5Percent20Minutes",
        ),
        (
            {
                "Type": "TimeBasedLinear",
                "TimeBasedLinear": {"LinearPercentage": "20", "LinearInterval": "1"},
            },
            "Linear20PercentEvery1Minute",
        ),
    ],
)
def test_deployment_configs_read_as_strategies(routing: dict[str, Any], name: str) -> None:
    strategy = deployment_config_strategy(
        {"ComputePlatform": "Lambda", "TrafficRoutingConfig": routing}
    )
    assert strategy.name == name
    assert parse_strategy(name) == strategy


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        ({"ComputePlatform": "Server"}, "its ComputePlatform is 'Server', not Lambda"),
        ({}, "it has no TrafficRoutingConfig"),
        (
            {"TrafficRoutingConfig": {"Type": "TimeBasedCanary"}},
            "its TrafficRoutingConfig has no TimeBasedCanary",
        ),
        (
            {
                "TrafficRoutingConfig": {
                    "Type": "TimeBasedLinear",
                    "TimeBasedLinear": {"LinearPercentage": 60, "LinearInterval": 1},
                }
            },
            "a linear percentage must be 1 to 50",
        ),
        (
            {
                "TrafficRoutingConfig": {
                    "Type": "TimeBasedCanary",
                    "TimeBasedCanary": {"CanaryPercentage": 2.5, "CanaryInterval": 1},
                }
            },
            "must be a whole number",
        ),
        (
            {"TrafficRoutingConfig": {"Type": "Blue"}},
            "use TimeBasedCanary, TimeBasedLinear or AllAtOnce",
        ),
    ],
)
def test_deployment_configs_that_are_not_strategies_say_why(
    properties: dict[str, Any], message: str
) -> None:
    with pytest.raises(StrategyError, match=message):
        deployment_config_strategy(properties)


@pytest.mark.parametrize(
    ("logical_id", "name"),
    [
        ("PlaceOrderFunction", "place-order-function"),
        ("APIHandlerV2", "api-handler-v2"),
        ("S3Uploader", "s3-uploader"),
        ("notify", "notify"),
        ("X" * 80, "x" * 63),
    ],
)
def test_names_from_logical_ids(logical_id: str, name: str) -> None:
    assert name_from(logical_id) == name


@given(st.text(max_size=120))
def test_names_are_valid_or_empty(text: str) -> None:
    name = name_from(text)
    assert name == "" or NAME_PATTERN.fullmatch(name)
    app = app_name_from(text)
    assert app == "" or (NAME_PATTERN.fullmatch(app) and len(app) <= 40)


def test_app_names_from_descriptions() -> None:
    assert app_name_from("Food ordering: place orders and notify users") == "food-ordering"
    assert app_name_from("sam-app\n\nSample SAM Template for sam-app") == "sam-app"
    assert app_name_from("Shop - orders with hooks") == "shop"
    assert app_name_from("A very long description that goes on and on about everything") == (
        "a-very-long-description-that-goes-on-and"
    )
