"""`HookConfig`: a URL or a Lambda function, its stored form read back unchanged, and rows
stored before Lambda hooks (``url`` only) still readable."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalmine.controller.schemas import HookSpec
from coalmine.core.errors import InvalidInput
from coalmine.core.records import HookConfig

urls = st.from_regex(r"https?://[a-z]{1,10}(\.[a-z]{2,5})?/[a-z0-9/]{0,20}", fullmatch=True)
functions = st.from_regex(
    r"(arn:aws:lambda:[a-z]{2}-[a-z]{4}-[1-3]:[0-9]{12}:function:)?[A-Za-z0-9_-]{1,20}"
    r"(:[A-Za-z0-9_-]{1,10})?",
    fullmatch=True,
)
timeouts = st.floats(min_value=0.01, max_value=300, allow_nan=False)
retries = st.integers(min_value=0, max_value=10)


@given(urls, timeouts, retries, st.dictionaries(st.text(max_size=5), st.text(max_size=5)))
def test_a_url_hook_round_trips(
    url: str, timeout: float, tries: int, headers: dict[str, str]
) -> None:
    hook = HookConfig(url, timeout, tries, headers)
    assert HookConfig.of(hook.to_dict()) == hook
    assert set(hook.to_dict()) == {"url", "timeout", "retries", "headers"}
    assert hook.where == url


@given(functions, timeouts, retries)
def test_a_lambda_hook_round_trips_through_records_and_the_api(
    function: str, timeout: float, tries: int
) -> None:
    hook = HookConfig(timeout=timeout, retries=tries, lambda_function=function)
    assert HookConfig.of(hook.to_dict()) == hook
    assert hook.to_dict()["lambda"] == function
    assert "url" not in hook.to_dict()
    assert hook.where == f"lambda {function}"
    spec = HookSpec.of(hook)
    assert spec.config() == hook
    assert spec.model_dump(mode="json") == hook.to_dict()


def test_a_row_stored_before_lambda_hooks_reads_as_a_url_hook() -> None:
    old = {"url": "https://ci.example/check", "timeout": 5, "retries": 1}
    assert HookConfig.of(old) == HookConfig("https://ci.example/check", 5.0, 1, {})


@pytest.mark.parametrize(
    "kwargs", [{}, {"url": "https://a.b/c", "lambda_function": "check"}], ids=["none", "both"]
)
def test_a_hook_is_a_url_or_a_function_never_both_or_neither(kwargs: dict[str, str]) -> None:
    with pytest.raises(InvalidInput, match="exactly one of url and lambda"):
        HookConfig(**kwargs)  # type: ignore[arg-type]
