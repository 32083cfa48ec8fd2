"""Strategies: CodeDeploy presets, custom shapes, step lists, and their errors."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalmine.core import PRESETS, InvalidInput, Step, Strategy, StrategyError, parse_strategy
from coalmine.core.errors import CoalmineError
from coalmine.core.strategy import (
    MAX_HOLD_SECONDS,
    MAX_STEPS,
    ScheduledStep,
    format_duration,
    parse_duration,
    parse_percent,
)


def _linear(pct: int, minutes: int) -> tuple[Step, ...]:
    n = 100 // pct
    return (*(Step(pct * 100 * i, minutes * 60.0) for i in range(1, n)), Step(10000, 0.0))


# name -> (steps, total duration in seconds), written out by hand
PRESET_TABLE: dict[str, tuple[tuple[Step, ...], float]] = {
    "Canary10Percent5Minutes": ((Step(1000, 300.0), Step(10000, 0.0)), 300),
    "Canary10Percent10Minutes": ((Step(1000, 600.0), Step(10000, 0.0)), 600),
    "Canary10Percent15Minutes": ((Step(1000, 900.0), Step(10000, 0.0)), 900),
    "Canary10Percent30Minutes": ((Step(1000, 1800.0), Step(10000, 0.0)), 1800),
    "Linear10PercentEvery1Minute": (
        (
            Step(1000, 60.0),
            Step(2000, 60.0),
            Step(3000, 60.0),
            Step(4000, 60.0),
            Step(5000, 60.0),
            Step(6000, 60.0),
            Step(7000, 60.0),
            Step(8000, 60.0),
            Step(9000, 60.0),
            Step(10000, 0.0),
        ),
        540,
    ),
    "Linear10PercentEvery2Minutes": (_linear(10, 2), 1080),
    "Linear10PercentEvery3Minutes": (_linear(10, 3), 1620),
    "Linear10PercentEvery10Minutes": (_linear(10, 10), 5400),
    "AllAtOnce": ((Step(10000, 0.0),), 0),
}


def test_presets_are_exactly_codedeploys() -> None:
    assert set(PRESETS) == set(PRESET_TABLE)


@pytest.mark.parametrize("prefix", ["", "CodeDeployDefault.Lambda"])
@pytest.mark.parametrize("name", sorted(PRESET_TABLE))
def test_preset_by_exact_name(prefix: str, name: str) -> None:
    steps, total = PRESET_TABLE[name]
    s = parse_strategy(prefix + name)
    assert s.name == name
    assert s.steps == steps
    assert s.total_duration == total
    assert s.steps[-1].exposure == 10000
    assert parse_strategy(f"  {prefix}{name}  ").steps == steps


@pytest.mark.parametrize(
    ("spec", "steps"),
    [
        ("Canary5Percent20Minutes", (Step(500, 1200.0), Step(10000, 0.0))),
        ("Canary1Percent1Minute", (Step(100, 60.0), Step(10000, 0.0))),
        ("Canary99Percent9999Minutes", (Step(9900, 599940.0), Step(10000, 0.0))),
        ("Canary10Percent0Minutes", (Step(1000, 0.0), Step(10000, 0.0))),
        ("CodeDeployDefault.LambdaCanary25Percent3Minutes", (Step(2500, 180.0), Step(10000, 0.0))),
        (
            "Linear25PercentEvery2Minutes",
            (Step(2500, 120.0), Step(5000, 120.0), Step(7500, 120.0), Step(10000, 0.0)),
        ),
        (
            "Linear30PercentEvery1Minute",
            (Step(3000, 60.0), Step(6000, 60.0), Step(9000, 60.0), Step(10000, 0.0)),
        ),
        ("Linear50PercentEvery5Minutes", (Step(5000, 300.0), Step(10000, 0.0))),
        (
            "CodeDeployDefault.LambdaLinear20PercentEvery1Minute",
            (*(Step(2000 * i, 60.0) for i in range(1, 5)), Step(10000, 0.0)),
        ),
    ],
)
def test_custom_codedeploy_shapes(spec: str, steps: tuple[Step, ...]) -> None:
    s = parse_strategy(spec)
    assert s.steps == steps
    assert s.name == spec.removeprefix("CodeDeployDefault.Lambda")


def test_linear_one_percent_has_the_maximum_number_of_steps() -> None:
    s = parse_strategy("Linear1PercentEvery1Minute")
    assert len(s.steps) == MAX_STEPS == 100
    assert [st.exposure for st in s.steps] == list(range(100, 10001, 100))


@pytest.mark.parametrize(
    ("spec", "steps"),
    [
        ("5%:30s, 25%:1m, 100%", (Step(500, 30.0), Step(2500, 60.0), Step(10000, 0.0))),
        ("0.5%:1h30m,12.25%:90,100%:0", (Step(50, 5400.0), Step(1225, 90.0), Step(10000, 0.0))),
        ("10:5m, 100", (Step(1000, 300.0), Step(10000, 0.0))),
        ("100%", (Step(10000, 0.0),)),
        ("0.01%:1.5h, 100%", (Step(1, 5400.0), Step(10000, 0.0))),
        ("1%:0.5s, 2%:2M, 100%", (Step(100, 0.5), Step(200, 120.0), Step(10000, 0.0))),
        (
            [{"percent": 5, "hold": "30s"}, {"exposure": 2500, "hold": 60}, {"percent": "100%"}],
            (Step(500, 30.0), Step(2500, 60.0), Step(10000, 0.0)),
        ),
        (
            [{"percent": 12.5, "hold": 1.5}, "50%:1m", Step(10000, 0.0)],
            (Step(1250, 1.5), Step(5000, 60.0), Step(10000, 0.0)),
        ),
        (("10%:1m", "100%"), (Step(1000, 60.0), Step(10000, 0.0))),
        ({"steps": "10%:1m, 100%"}, (Step(1000, 60.0), Step(10000, 0.0))),
        ({"name": "AllAtOnce"}, (Step(10000, 0.0),)),
    ],
)
def test_custom_step_lists(spec: object, steps: tuple[Step, ...]) -> None:
    assert parse_strategy(spec).steps == steps


def test_custom_names() -> None:
    assert parse_strategy("5%:30s, 100%").name == "custom"
    assert parse_strategy([{"percent": 100}]).name == "custom"
    named = parse_strategy({"name": "careful", "steps": [{"percent": 1, "hold": "1h"}, "100%"]})
    assert named.name == "careful"
    assert named.steps == (Step(100, 3600.0), Step(10000, 0.0))
    assert parse_strategy({"name": "Canary10Percent5Minutes"}).name == "Canary10Percent5Minutes"


def test_a_strategy_parses_to_itself() -> None:
    s = parse_strategy("AllAtOnce")
    assert parse_strategy(s) is s


def test_to_dict() -> None:
    assert parse_strategy("Canary10Percent5Minutes").to_dict() == {
        "name": "Canary10Percent5Minutes",
        "steps": [{"exposure": 1000, "hold": 300.0}, {"exposure": 10000, "hold": 0.0}],
    }


# --- describe ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "described"),
    [
        ("Canary10Percent5Minutes", "10%:5m, 100%"),
        ("Canary10Percent30Minutes", "10%:30m, 100%"),
        (
            "Linear10PercentEvery10Minutes",
            ", ".join(f"{p}%:10m" for p in range(10, 100, 10)) + ", 100%",
        ),
        ("AllAtOnce", "100%"),
        ("0.01%:90, 12.34%:2h, 50%:0.25s, 100%", "0.01%:90s, 12.34%:2h, 50%:0.25s, 100%"),
        ("10%, 100%", "10%, 100%"),
    ],
)
def test_describe(spec: str, described: str) -> None:
    s = parse_strategy(spec)
    assert s.describe() == described
    assert parse_strategy(described).steps == s.steps


@pytest.mark.parametrize("name", sorted(PRESET_TABLE))
def test_describe_round_trips_presets(name: str) -> None:
    s = parse_strategy(name)
    assert parse_strategy(s.describe()).steps == s.steps


@st.composite
def step_lists(draw: st.DrawFn) -> tuple[Step, ...]:
    exposures = [*sorted(draw(st.sets(st.integers(1, 9999), max_size=12))), 10000]
    holds = draw(
        st.lists(
            st.one_of(
                st.integers(0, MAX_HOLD_SECONDS),
                st.floats(0, MAX_HOLD_SECONDS, allow_nan=False),
                st.floats(0, 1e-3),
            ),
            min_size=len(exposures),
            max_size=len(exposures),
        )
    )
    return tuple(Step(e, h) for e, h in zip(exposures, holds, strict=True))


@settings(max_examples=200, deadline=None)
@given(step_lists())
def test_describe_round_trips_any_strategy(steps: tuple[Step, ...]) -> None:
    s = Strategy("x", steps)
    back = parse_strategy(s.describe())
    assert back.steps == s.steps
    assert back.describe() == s.describe()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45, "45s"),
        (60, "1m"),
        (90, "90s"),
        (5400, "90m"),
        (7200, "2h"),
        (0.5, "0.5s"),
        (1e-05, "0.00001s"),
        (100000.5, "100000.5s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


# --- schedule ----------------------------------------------------------------------------


def test_schedule_and_exposure_at_boundaries() -> None:
    s = parse_strategy("5%:30s, 25%:1m, 100%")
    assert s.schedule() == (
        ScheduledStep(0, 500, 0.0, 30.0),
        ScheduledStep(1, 2500, 30.0, 90.0),
        ScheduledStep(2, 10000, 90.0, 90.0),
    )
    assert s.total_duration == 90
    table = [
        (-1e-9, 0),
        (-100, 0),
        (0, 500),
        (29.999, 500),
        (30, 2500),
        (89.999, 2500),
        (90, 10000),
        (1e9, 10000),
    ]
    assert [(t, s.exposure_at(t)) for t, _ in table] == table


def test_exposure_at_for_presets() -> None:
    assert parse_strategy("AllAtOnce").exposure_at(0) == 10000
    canary = parse_strategy("Canary10Percent5Minutes")
    assert [canary.exposure_at(t) for t in (0, 299.999, 300, 301)] == [1000, 1000, 10000, 10000]
    linear = parse_strategy("Linear10PercentEvery1Minute")
    assert [linear.exposure_at(60 * i) for i in range(11)] == [
        1000 * min(i + 1, 10) for i in range(11)
    ]


def test_exposure_at_is_monotonic() -> None:
    s = parse_strategy("Linear10PercentEvery3Minutes")
    values = [s.exposure_at(t / 2) for t in range(-10, 2 * 1700)]
    assert values == sorted(values)


# --- parsing helpers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        ("90", 90.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1h30m15s", 5415.0),
        ("1.5h", 5400.0),
        (" 2M ", 120.0),
        ("0", 0.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "invalid duration"),
        (None, "invalid duration"),
        ("", "invalid duration"),
        ("5 minutes", "30s, 5m, 1h30m"),
        ("1d", "30s, 5m, 1h30m"),
        (-1, ">= 0"),
        ("-5", ">= 0"),
        (math.inf, "finite"),
        (math.nan, "finite"),
        ("1e400", "finite"),
    ],
)
def test_parse_duration_rejects(value: object, message: str) -> None:
    with pytest.raises(StrategyError, match=message):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "bp"),
    [
        ("12.5%", 1250),
        ("12.5", 1250),
        (12.5, 1250),
        (0.29, 29),
        ("0.01%", 1),
        (" 7 % ", 700),
        (100, 10000),
    ],
)
def test_parse_percent(value: object, bp: int) -> None:
    assert parse_percent(value) == bp


@pytest.mark.parametrize("value", [True, None, "abc", "0.001", "1.005%", [], "%"])
def test_parse_percent_rejects(value: object) -> None:
    with pytest.raises(StrategyError, match="invalid percentage"):
        parse_percent(value)


# --- invalid strategies ----------------------------------------------------------------------

INVALID = [
    ("10%:1m, 5%:1m, 100%", "step 2: exposure 5% must be above the previous step's 10%"),
    ("10%:1m, 10%, 100%", "exposure only grows"),
    ("10%:1m, 50%:1m", "must end at 100%"),
    ("10%", "the last step is at 10%"),
    ("150%", "step 1: exposure 150% .* out of range"),
    ("0%:1m, 100%", "step 1: exposure 0% .* out of range"),
    ("-5%, 100%", "out of range"),
    ([{"exposure": 0}, {"exposure": 10000}], "out of range"),
    ([{"exposure": 10001}], "out of range"),
    ([Step(True, 0), Step(10000, 0)], "out of range"),  # type: ignore[arg-type]
    ("12.345%, 100%", "at most two decimals"),
    ("0.001%, 100%", "at most two decimals"),
    ("10%:-5, 100%", "finite number >= 0"),
    ("10%:inf, 100%", "finite number >= 0"),
    ([{"percent": 10, "hold": -1}, "100%"], "finite number >= 0"),
    ([Step(1000, -1.0), Step(10000, 0)], "step 1: hold -1.0 must be a finite number"),
    ([Step(1000, math.inf), Step(10000, 0)], "finite number of seconds"),
    ([Step(1000, math.nan), Step(10000, 0)], "finite number of seconds"),
    ([{"percent": 10, "hold": 31 * 86400}, "100%"], "longer than 30 days"),
    ("10%:soon, 100%", "invalid duration 'soon'"),
    ("abc%, 100%", "invalid percentage"),
    ("FooBar", "unknown strategy 'FooBar'"),
    ("CodeDeployDefault.LambdaFooBar", "unknown strategy"),
    ("CodeDeployDefault.Lambda", "unknown strategy"),
    ("Canary100Percent5Minutes", "unknown strategy"),
    ("Canary0Percent5Minutes", "a canary percentage must be 1 to 99"),
    ("Linear0PercentEvery1Minute", "a linear percentage must be 1 to 50"),
    ("Linear60PercentEvery1Minute", "a linear percentage must be 1 to 50"),
    ([{"percent": 10, "hold": "5m", "wait": 1}, "100%"], r"unknown field\(s\) wait"),
    ([{"percent": 10, "exposure": 1000}], "exactly one of percent"),
    ([{"hold": "5m"}], "exactly one of percent"),
    ([{"exposure": 10.5}], "whole basis points"),
    ([{"exposure": True}], "whole basis points"),
    ([], "at least one step"),
    ((), "at least one step"),
    ("", "unknown strategy ''"),
    ("10%:5m,", "step 2: missing percentage"),
    (":5m, 100%", "step 1: missing percentage"),
    ([42], "step 1: 42 is not a step"),
    (42, "invalid strategy 42"),
    (None, "invalid strategy None"),
    ({"foo": 1}, "needs 'steps'"),
    ({"steps": "100%", "name": ""}, "name must be a non-empty string"),
    ([f"{i}%" for i in range(1, 101)] + ["100%"], "at most 100 steps, got 101"),
    ("nan%, 100%", "invalid percentage"),
]


@pytest.mark.parametrize(("spec", "message"), INVALID)
def test_invalid_strategies(spec: object, message: str) -> None:
    with pytest.raises(StrategyError, match=message):
        parse_strategy(spec)


def test_strategy_constructor_validates() -> None:
    with pytest.raises(StrategyError, match="must be above"):
        Strategy("x", (Step(5000, 0.0), Step(4000, 0.0), Step(10000, 0.0)))
    with pytest.raises(StrategyError, match="at least one step"):
        Strategy("x", ())


def test_strategy_error_hierarchy() -> None:
    assert issubclass(StrategyError, InvalidInput)
    assert issubclass(StrategyError, ValueError)
    assert issubclass(StrategyError, CoalmineError)
    with pytest.raises(ValueError, match="unknown strategy"):
        parse_strategy("nope")
