"""`run_attempts`: the retry loop and the outcome sentence every hook runner shares."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from coalmine.core.attempts import MAX_BACKOFF, Attempt, backoff_delay, run_attempts
from coalmine.core.ports import HookOutcome

LABEL = "before_allow_traffic hook lambda check"


def scripted(answers: list[Attempt]) -> tuple[list[int], Callable[[int], Attempt]]:
    calls: list[int] = []

    def attempt(number: int) -> Attempt:
        calls.append(number)
        return answers[min(number, len(answers)) - 1]

    return calls, attempt


@given(st.integers(min_value=0, max_value=6), st.integers(min_value=1, max_value=8))
def test_it_stops_at_the_first_pass(retries: int, passes_on: int) -> None:
    calls, attempt = scripted([Attempt("answered 503")] * (passes_on - 1) + [Attempt()])
    sleeps: list[float] = []
    got = run_attempts(LABEL, attempt, retries=retries, backoff=0.25, sleep=sleeps.append)
    made = min(passes_on, retries + 1)
    assert calls == list(range(1, made + 1))
    assert sleeps == [backoff_delay(0.25, n) for n in range(1, made)]
    if passes_on <= retries + 1:
        tries = f" on attempt {passes_on}" if passes_on > 1 else ""
        assert got == HookOutcome(True, f"{LABEL} passed{tries}")
    else:
        plural = "s" if retries else ""
        assert got == HookOutcome(
            False, f"{LABEL} answered 503 after {retries + 1} attempt{plural}"
        )


@given(st.integers(min_value=0, max_value=6), st.integers(min_value=1, max_value=7))
def test_a_final_failure_is_never_retried(retries: int, at: int) -> None:
    calls, attempt = scripted(
        [Attempt("timed out (1s)")] * (at - 1) + [Attempt("answered Failed: x", final=True)]
    )
    got = run_attempts(LABEL, attempt, retries=retries, backoff=0.0, sleep=lambda _s: None)
    if at <= retries + 1:
        assert calls[-1] == at
        tries = f" on attempt {at}" if at > 1 else ""
        assert got == HookOutcome(False, f"{LABEL} answered Failed: x{tries}")
    else:
        assert len(calls) == retries + 1
        assert got.detail.endswith(
            f"timed out (1s) after {retries + 1} attempt{'s' if retries else ''}"
        )


@given(
    st.floats(min_value=0, max_value=10, allow_nan=False), st.integers(min_value=1, max_value=40)
)
def test_backoff_doubles_and_is_capped(base: float, failed: int) -> None:
    delay = backoff_delay(base, failed)
    assert 0 <= delay <= MAX_BACKOFF
    assert delay == min(MAX_BACKOFF, base * 2 ** (failed - 1))
