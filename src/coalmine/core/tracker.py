"""The tracker: successive interval verdicts folded into an action.

`Tracker` rolls a release back after ``failure_limit`` failed intervals in a
row, pauses it after more than ``max_inconclusive`` inconclusive intervals in
a row, else lets it continue (`Action`). An interval inconclusive only for
want of traffic (`Verdict.waiting`) is not counted: evidence is still coming,
and a step waits for it (the controller pauses a release whose evidence cannot
come in time). It is immutable and serialisable, so the controller persists
it between intervals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from coalmine.core.analysis import AnalysisSettings, InconclusivePolicy
from coalmine.core.errors import InvalidInput
from coalmine.core.verdict import Outcome, Verdict

__all__ = ["Action", "Tracker"]


class Action(StrEnum):
    """What the controller does after an interval's verdict."""

    CONTINUE = "continue"
    PAUSE = "pause"
    ROLLBACK = "rollback"


@dataclass(frozen=True, slots=True)
class Tracker:
    """Folds interval verdicts into an action; immutable, so the controller persists it.

    ``failure_limit`` failed intervals in a row roll the release back (and a
    rollback is final: later verdicts do not undo it). More than
    ``max_inconclusive`` inconclusive intervals in a row pause it (or, with
    ``inconclusive: continue``, only say so). A pass resets both runs; a fail
    ends a run of inconclusive intervals and an inconclusive one a run of
    failures. A waiting interval (too little traffic yet) ends a run of
    failures and leaves the run of inconclusive intervals as it was.
    """

    failure_limit: int = 1
    max_inconclusive: int = 5
    inconclusive: InconclusivePolicy = InconclusivePolicy.PAUSE
    intervals: int = 0
    consecutive_failures: int = 0
    consecutive_inconclusive: int = 0
    action: Action = Action.CONTINUE
    reason: str = ""

    @classmethod
    def start(cls, settings: AnalysisSettings | None = None) -> Tracker:
        settings = settings if settings is not None else AnalysisSettings()
        return cls(settings.failure_limit, settings.max_inconclusive, settings.inconclusive)

    def observe(self, verdict: Verdict) -> Tracker:
        """The tracker after one more interval's verdict."""
        if self.action is Action.ROLLBACK:
            return replace(self, intervals=self.intervals + 1)
        n = self.intervals + 1
        why = verdict.reason
        if verdict.outcome is Outcome.FAIL:
            fails = self.consecutive_failures + 1
            if fails >= self.failure_limit:
                run = "1 interval" if fails == 1 else f"{fails} consecutive intervals"
                return replace(
                    self,
                    intervals=n,
                    consecutive_failures=fails,
                    consecutive_inconclusive=0,
                    action=Action.ROLLBACK,
                    reason=f"canary failed analysis for {run}: {why}",
                )
            return replace(
                self,
                intervals=n,
                consecutive_failures=fails,
                consecutive_inconclusive=0,
                action=Action.CONTINUE,
                reason=(
                    f"canary failed analysis ({fails} of {self.failure_limit} consecutive"
                    f" failed intervals before rollback): {why}"
                ),
            )
        if verdict.outcome is Outcome.INCONCLUSIVE and verdict.waiting:
            return replace(
                self,
                intervals=n,
                consecutive_failures=0,
                action=Action.CONTINUE,
                reason=f"waiting for evidence: {why}",
            )
        if verdict.outcome is Outcome.INCONCLUSIVE:
            runs = self.consecutive_inconclusive + 1
            over = runs > self.max_inconclusive
            if over and self.inconclusive is InconclusivePolicy.PAUSE:
                action, reason = Action.PAUSE, f"analysis inconclusive for {runs} intervals: {why}"
            elif over:
                action, reason = (
                    Action.CONTINUE,
                    f"analysis inconclusive for {runs} intervals, continuing"
                    f" (inconclusive: continue): {why}",
                )
            else:
                action, reason = (
                    Action.CONTINUE,
                    f"analysis inconclusive ({runs} of {self.max_inconclusive} intervals"
                    f" allowed): {why}",
                )
            return replace(
                self,
                intervals=n,
                consecutive_failures=0,
                consecutive_inconclusive=runs,
                action=action,
                reason=reason,
            )
        return replace(
            self,
            intervals=n,
            consecutive_failures=0,
            consecutive_inconclusive=0,
            action=Action.CONTINUE,
            reason=f"canary passed analysis: {why}",
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "failure_limit": self.failure_limit,
            "max_inconclusive": self.max_inconclusive,
            "inconclusive": str(self.inconclusive),
            "intervals": self.intervals,
            "consecutive_failures": self.consecutive_failures,
            "consecutive_inconclusive": self.consecutive_inconclusive,
            "action": str(self.action),
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tracker:
        if not isinstance(data, Mapping):
            raise InvalidInput("a tracker must be a JSON object")
        try:
            return cls(
                failure_limit=int(data["failure_limit"]),
                max_inconclusive=int(data["max_inconclusive"]),
                inconclusive=InconclusivePolicy(data["inconclusive"]),
                intervals=int(data["intervals"]),
                consecutive_failures=int(data["consecutive_failures"]),
                consecutive_inconclusive=int(data["consecutive_inconclusive"]),
                action=Action(data["action"]),
                reason=str(data["reason"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"invalid tracker state: {exc}") from None
