"""A verdict: one analysis interval's outcome, metric by metric, with its reasons.

`Outcome` is ``pass``, ``fail`` or ``inconclusive``; a `MetricResult` is one
metric's outcome with the sentence that explains it and its numbers; a
`Verdict` is the worst metric's outcome with the sentences behind it, whether
the evidence a step waits for is in (`Verdict.enough`), and the judge's
sequential state after the look. The judge (`coalmine.core.judge`) produces
verdicts, the tracker (`coalmine.core.tracker`) folds them into actions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from coalmine.core.sequential import JudgeState

__all__ = ["MetricResult", "Outcome", "Verdict"]


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"

    @property
    def severity(self) -> int:
        """fail > inconclusive > pass: a verdict is its worst metric's outcome."""
        return _SEVERITY[self]


_SEVERITY = {Outcome.PASS: 0, Outcome.INCONCLUSIVE: 1, Outcome.FAIL: 2}


@dataclass(frozen=True, slots=True)
class MetricResult:
    """One metric's outcome, the sentence that explains it, and its numbers.

    ``canary`` and ``stable`` are in the metric's unit (error rate in percent,
    latency in milliseconds, a custom metric in its own); ``change`` and
    ``limit`` are in ``change_unit`` (``pp`` percentage points, ``%``
    relative, or ``""`` absolute).
    """

    name: str
    outcome: Outcome
    reason: str
    canary: float | None = None
    stable: float | None = None
    change: float | None = None
    limit: float | None = None
    change_unit: str = ""
    p_value: float | None = None
    """the always-valid p-value of the metric's sequential test, over every look so far"""
    note: str = ""
    """what the comparison says about stable itself (e.g. its errors are as high)"""
    evidence: int | None = None
    """canary requests (or latency measurements) the test has seen; None: no test"""
    needed: int | None = None
    """what the test needs to catch a regression at the limit with the configured power;
    None with ``evidence`` set: not known yet (no stable baseline, or a limit finer than
    the histogram can tell)"""

    @property
    def enough(self) -> bool:
        """Whether this metric has the evidence a step waits for (always, without a test)."""
        if self.evidence is None:
            return True
        return self.needed is not None and self.evidence >= self.needed

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": str(self.outcome),
            "reason": self.reason,
            "canary": _finite_or_none(self.canary),
            "stable": _finite_or_none(self.stable),
            "change": _finite_or_none(self.change),
            "limit": self.limit,
            "change_unit": self.change_unit,
            "p_value": self.p_value,
            "note": self.note,
            "evidence": self.evidence,
            "needed": self.needed,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """One interval's analysis: the worst metric's outcome, and why."""

    outcome: Outcome
    metrics: tuple[MetricResult, ...]
    reasons: tuple[str, ...]
    """the sentences of the metrics with the verdict's outcome"""
    notes: tuple[str, ...]
    """what the analysis found about stable, whatever the outcome"""
    canary_requests: int
    stable_requests: int
    enough: bool = False
    """every tested metric has the evidence a step waits for"""
    waiting: bool = False
    """inconclusive only for want of data (too little traffic): evidence still coming"""
    state: JudgeState | None = None
    """the judge's sequential state after this look, for the next one"""
    idle: bool = False
    """neither channel served a call in the window: nothing was judged, and the function
    does not hold the release's steps (`coalmine.core.gate`)"""

    @property
    def ready(self) -> bool:
        """Whether a step may advance on this verdict: it passed, on enough evidence."""
        return self.outcome is Outcome.PASS and self.enough

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def metric(self, name: str) -> MetricResult:
        for result in self.metrics:
            if result.name == name:
                return result
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": str(self.outcome),
            "reason": self.reason,
            "reasons": list(self.reasons),
            "notes": list(self.notes),
            "canary_requests": self.canary_requests,
            "stable_requests": self.stable_requests,
            "enough": self.enough,
            "waiting": self.waiting,
            "idle": self.idle,
            "metrics": [m.to_dict() for m in self.metrics],
            "state": self.state.to_dict() if self.state is not None else None,
        }


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
