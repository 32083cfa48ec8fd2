"""The evidence gate: whether a judged release's step may advance, and why it may not.

DESIGN rule 8: a step advances when the judge has seen enough of the canary
to catch a regression at the configured limits, not when its hold is over.
`evidence_gate` reads one analysis run's verdicts (one per function): the
gate is open when every function passed on enough evidence, every tested
metric having served the requests it needs
(`coalmine.core.verdict.MetricResult.needed`). ``inconclusive: continue`` is
the owner's explicit opt-out: the gate is then open unless the canary failed,
and the steps go by the clock. An *idle* function (no call in either channel
since traffic started, `coalmine.core.verdict.Verdict.idle`) is not judged
and holds nothing; while every function is idle the gate is open with
``idle: clock`` (the steps go by the strategy) and shut with ``idle: pause``.
`stalled` says when a release
whose hold is over must pause instead of waiting on: when the evidence
cannot come (no canary traffic, no stable traffic to compare with, a limit
finer than the histograms can tell) or has not come within ``max_wait``; its
sentence says how far the evidence is and what to do (more time, a larger
step, a wider limit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from coalmine.core.analysis import AnalysisSettings, IdlePolicy, InconclusivePolicy
from coalmine.core.strategy import format_duration
from coalmine.core.verdict import Outcome, Verdict

__all__ = ["EvidenceGate", "Shortfall", "evidence_gate", "no_calls", "stalled"]


@dataclass(frozen=True, slots=True)
class Shortfall:
    """One tested metric of one function: the evidence it has against what it needs."""

    function: str
    metric: str
    evidence: int
    needed: int | None
    """None: cannot be known yet (no stable traffic, or a limit finer than the histograms)"""
    limit: float | None
    unit: str

    @property
    def enough(self) -> bool:
        return self.needed is not None and self.evidence >= self.needed

    def to_dict(self) -> dict[str, Any]:
        return {
            "function": self.function,
            "metric": self.metric,
            "evidence": self.evidence,
            "needed": self.needed,
        }

    def describe(self) -> str:
        """``cart error_rate 1,200 of 3,671 canary requests``."""
        what = "canary requests" if self.metric == "error_rate" else "canary latencies"
        if self.needed is None:
            return f"{self.function} {self.metric} {self.evidence:,} {what}, need unknown"
        return f"{self.function} {self.metric} {self.evidence:,} of {self.needed:,} {what}"


@dataclass(frozen=True, slots=True)
class EvidenceGate:
    """Whether a step may advance on the latest verdicts, and the evidence per metric."""

    open: bool
    reason: str
    """why it is closed (one line), empty when open"""
    metrics: tuple[Shortfall, ...]
    """every tested metric's evidence, enough or not"""
    idle: tuple[str, ...] = ()
    """the functions not judged: no call in either channel since traffic started"""

    @property
    def all_idle(self) -> bool:
        """Whether no function was judged because none has served a call."""
        return bool(self.idle) and not self.metrics

    @property
    def short(self) -> tuple[Shortfall, ...]:
        return tuple(m for m in self.metrics if not m.enough)

    def to_dict(self) -> dict[str, Any]:
        return {
            "open": self.open,
            "reason": self.reason,
            "metrics": [m.to_dict() for m in self.metrics],
            "idle": list(self.idle),
        }


def no_calls(functions: Sequence[str]) -> str:
    """The sentence for a release none of whose changed functions has served a call."""
    return (
        f"no data: no changed function ({', '.join(functions)}) has served a call in either"
        " channel since traffic started"
    )


def evidence_gate(verdicts: Mapping[str, Verdict], settings: AnalysisSettings) -> EvidenceGate:
    """The gate after one analysis run whose verdicts (by function) are ``verdicts``."""
    idle = tuple(fn for fn, v in verdicts.items() if v.idle)
    verdicts = {fn: v for fn, v in verdicts.items() if not v.idle}
    metrics = tuple(
        Shortfall(fn, m.name, m.evidence, m.needed, m.limit, m.change_unit)
        for fn, v in verdicts.items()
        for m in v.metrics
        if m.evidence is not None
    )
    short = [m for m in metrics if not m.enough]
    if not verdicts and idle:
        if (
            settings.idle is IdlePolicy.CLOCK
            or settings.inconclusive is InconclusivePolicy.CONTINUE
        ):
            return EvidenceGate(True, "", (), idle)
        return EvidenceGate(False, no_calls(idle), (), idle)
    if not verdicts:
        return EvidenceGate(False, "no function changes in this release: nothing to judge", ())
    failed = [fn for fn, v in verdicts.items() if v.outcome is Outcome.FAIL]
    if failed:
        return EvidenceGate(
            False, f"the canary failed analysis ({', '.join(failed)})", metrics, idle
        )
    if settings.inconclusive is InconclusivePolicy.CONTINUE:
        # the release's owner opted out: steps go by the clock unless the canary fails
        return EvidenceGate(True, "", metrics, idle)
    unsure = [fn for fn, v in verdicts.items() if v.outcome is Outcome.INCONCLUSIVE]
    if short:
        shown = "; ".join(m.describe() for m in short)
        return EvidenceGate(False, f"waiting for evidence: {shown}", metrics, idle)
    if unsure:
        return EvidenceGate(
            False,
            f"waiting for a verdict: analysis inconclusive ({', '.join(unsure)})",
            metrics,
            idle,
        )
    return EvidenceGate(True, "", metrics, idle)


def _what(short: Shortfall) -> str:
    """The regression a metric must be able to catch: ``+1 pp errors``, ``p99 +20%``."""
    limit = f"{short.limit:g}" if short.limit is not None else "?"
    if short.metric == "error_rate":
        return f"+{limit} pp errors"
    return f"{short.metric.removeprefix('latency_')} +{limit}%"


def _minutes(seconds: float) -> str:
    if seconds >= 3600:
        hours, rest = divmod(round(seconds / 60), 60)
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    return f"{max(1, round(seconds / 60))} min"


def stalled(
    gate: EvidenceGate,
    settings: AnalysisSettings,
    *,
    waited: float,
    elapsed: float,
    canary_requests: Mapping[str, int],
    stable_requests: Mapping[str, int],
) -> str | None:
    """Why a release whose step's hold ended ``waited`` seconds ago must pause now, or None
    while it may wait on.

    ``elapsed`` is how long the release has had traffic, and ``canary_requests`` and
    ``stable_requests`` what each function served in that time (the rate the evidence
    comes at). Closed for another reason than evidence (an inconclusive verdict), the
    release waits up to ``max_wait`` too.
    """
    if gate.open:
        return None
    if gate.all_idle:
        return (
            f"not enough evidence to judge the canary: {no_calls(gate.idle)}; check that"
            " traffic reaches the app and its SDKs or gateways send metrics, or let the steps"
            " go by the clock while nothing is called (analysis idle: clock)"
        )
    fix = (
        "give it more time (resume: the step waits up to max_wait again), a larger step"
        " (more exposure), or a wider limit"
    )
    for short in gate.short:
        fn = short.function
        if not canary_requests.get(fn, 0):
            return (
                f"not enough evidence to judge the canary: {fn} has served no canary request;"
                " check that traffic reaches the canary, or raise the step's exposure"
            )
        if short.needed is None and not stable_requests.get(fn, 0):
            return (
                f"not enough evidence to judge the canary: {fn} stable serves no traffic"
                " (at 100% exposure there is nothing to compare the canary with): judge it"
                " at a step below 100%, or turn analysis off for this release"
            )
        if short.needed is None and short.metric != "error_rate":
            return (
                f"not enough evidence to judge the canary: {fn} {short.metric}'s limit"
                f" (+{short.limit:g}%) is finer than the latency histograms can tell apart:"
                f" widen metrics.{short.metric}.max_increase_pct"
            )
    if waited < settings.max_wait:
        return None
    wait = format_duration(settings.max_wait)
    if not gate.short:
        return f"{gate.reason}, {wait} after the step's hold ended"
    parts = []
    for short in gate.short:
        rate = canary_requests.get(short.function, 0) / elapsed if elapsed > 0 else 0.0
        text = f"{short.describe()} needed to catch {_what(short)} with {settings.power:.0%} power"
        if short.needed is not None and rate > 0:
            left = (short.needed - short.evidence) / rate
            text += f" (at {rate * 60:,.3g} a minute, about {_minutes(left)} more)"
        parts.append(text)
    limits = sorted(
        {
            "error_rate.max_increase_pp"
            if s.metric == "error_rate"
            else f"{s.metric}.max_increase_pct"
            for s in gate.short
        }
    )
    return (
        f"not enough evidence to judge the canary {wait} after the step's hold ended: "
        + "; ".join(parts)
        + f"; {fix} ({', '.join(limits)})"
    )
