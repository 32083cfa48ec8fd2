"""Bounded decoding from the wire: the depth check agrees with the real nesting of any JSON
document, load_json takes every document within bounds exactly as json does and refuses the
rest with InvalidInput; the parsers of settings from the wire raise nothing else, whatever
numbers they are given."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalmine.core.analysis import AnalysisSettings
from coalmine.core.errors import InvalidInput
from coalmine.core.strategy import parse_duration, parse_percent, parse_strategy
from coalmine.core.wire import MAX_DEPTH, MAX_INT, load_json, long_int, too_deep

_NUMBERS = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([MAX_INT, MAX_INT + 1, -MAX_INT - 1, 10**400, -(10**400), 0]),
    st.floats(allow_nan=True, allow_infinity=True),
)
_SCALARS = st.one_of(st.none(), st.booleans(), _NUMBERS, st.text(max_size=12))
_JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=20,
)


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def within_bounds(value: Any) -> bool:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    if isinstance(value, int):
        return -MAX_INT <= value <= MAX_INT
    if isinstance(value, float):
        return math.isfinite(value)
    children = value.values() if isinstance(value, dict) else value
    return all(within_bounds(v) for v in children)


@settings(max_examples=300, deadline=None)
@given(doc=_JSON, limit=st.integers(0, 6))
def test_too_deep_is_the_real_nesting_read_without_parsing(doc: Any, limit: int) -> None:
    text = json.dumps(doc)  # strings may hold brackets and escaped quotes
    assert too_deep(text, limit) == (depth(doc) > limit)


@settings(max_examples=300, deadline=None)
@given(doc=_JSON)
def test_load_json_takes_what_is_within_bounds_and_refuses_the_rest(doc: Any) -> None:
    text = json.dumps(doc)
    if within_bounds(doc):
        assert load_json(text) == json.loads(text)
    else:
        with pytest.raises(InvalidInput):
            load_json(text)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("[" * 100_000 + "]" * 100_000, f"the body is nested more than {MAX_DEPTH} levels deep"),
        ('{"a": ' * 33 + "1" + "}" * 33, f"the body is nested more than {MAX_DEPTH} levels deep"),
        (
            "9" * 5000,
            "the number 99999999999999999999... (5000 digits) in the body is beyond 64 bits",
        ),
        (str(-(2**63)), "the number -9223372036854775808 in the body is beyond 64 bits"),
        ("1e400", "the number 1e400 in the body is beyond the range of a float"),
        ("[NaN]", "NaN is not a JSON number"),
        ("-Infinity", "-Infinity is not a JSON number"),
        (
            "{",
            "the body is not JSON: Expecting property name enclosed in double quotes at line 1, column 2",
        ),
        (b"\xff", "the body is not UTF-8 text"),
    ],
)
def test_load_json_says_what_is_wrong(text: str | bytes, said: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        load_json(text)
    assert str(caught.value) == said


def test_a_string_of_brackets_is_no_nesting() -> None:
    doc = {"name": "[" * 1000 + '\\"{' * 1000, "x": [[1]]}
    assert load_json(json.dumps(doc)) == doc
    assert load_json('["' + "[" * 40 + '"]') == ["[" * 40]


def test_long_int_refuses_decimal_numbers_longer_than_64_bits_only() -> None:
    for fine in ("9223372036854775807", "-12", "1_000", "0x" + "f" * 40, "12.5", "abc", ""):
        long_int(fine)
    for long in ("9" * 20, "-" + "1" * 4300, "1_000_000_000_000_000_000_000"):
        with pytest.raises(InvalidInput, match="is beyond 64 bits"):
            long_int(long)


@settings(max_examples=300, deadline=None)
@given(value=_JSON)
def test_settings_parsers_raise_only_invalid_input_whatever_the_numbers(value: Any) -> None:
    """A release's settings come from the wire as any JSON: huge ints, inf, nan included."""
    for parse in (parse_duration, parse_percent, parse_strategy):
        with contextlib.suppress(InvalidInput):
            parse(value)
    for spec in (
        value,
        {"interval": value},
        {"min_requests": value, "failure_limit": value},
        {"metrics": {"error_rate": {"max_increase": value, "confidence": value}}},
        {"metrics": {"p99": {"max_increase": value}}},
        {"custom": value},
    ):
        with contextlib.suppress(InvalidInput):
            AnalysisSettings.parse(spec)
