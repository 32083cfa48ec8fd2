"""The tries of one hook: attempt after attempt until one passes, one fails for good, or
none are left; and the sentence that reports it.

Every hook runner (HTTP, Lambda) makes one attempt at a time and leaves the
retries, the pause between them and the wording of the `HookOutcome` to
`run_attempts`, so that the two kinds of hook retry and report alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from coalmine.core.ports import HookOutcome

__all__ = ["MAX_BACKOFF", "Attempt", "backoff_delay", "run_attempts"]

MAX_BACKOFF = 2.0
"""seconds: the longest pause between two attempts of a hook"""


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one attempt of a hook found."""

    problem: str = ""
    """what went wrong, as the end of a sentence ("answered 500"); empty: it passed"""
    final: bool = False
    """the hook's own verdict (a Lambda hook answered Failed): no retry would change it"""

    @property
    def passed(self) -> bool:
        return not self.problem


def backoff_delay(backoff: float, failed: int) -> float:
    """The pause after failed attempt number ``failed`` (1-based): ``backoff``, doubling,
    at most `MAX_BACKOFF`."""
    return float(min(MAX_BACKOFF, backoff * 2 ** (failed - 1)))


def run_attempts(
    label: str,
    attempt: Callable[[int], Attempt],
    *,
    retries: int,
    backoff: float,
    sleep: Callable[[float], None],
) -> HookOutcome:
    """Call ``attempt(1)``, ``attempt(2)``, ... (at most ``retries + 1`` times, sleeping
    `backoff_delay` between them) until one passes or fails for good.

    ``label`` starts every sentence: ``"before_allow_traffic hook https://ci/check"``.
    """
    attempts = retries + 1
    last = Attempt("was not attempted")
    for number in range(1, attempts + 1):
        if number > 1:
            sleep(backoff_delay(backoff, number - 1))
        last = attempt(number)
        tries = f" on attempt {number}" if number > 1 else ""
        if last.passed:
            return HookOutcome(True, f"{label} passed{tries}")
        if last.final:
            return HookOutcome(False, f"{label} {last.problem}{tries}")
    plural = "s" if attempts > 1 else ""
    return HookOutcome(False, f"{label} {last.problem} after {attempts} attempt{plural}")
