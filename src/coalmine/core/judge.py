"""The judge: canary against stable over the same window, metric by metric, look after look.

`judge` compares per-version metrics (request and error counters and a
latency histogram per channel) and returns a `Verdict`: ``pass``, ``fail`` or
``inconclusive``, its worst metric's outcome, with one sentence per metric a
person can read, the evidence each metric has gathered against what it needs,
and the judge's sequential state to hand back at the next look. This module
owns the per-metric checks and their sentences; the result types are in
`coalmine.core.verdict`, the statistics in `coalmine.core.stats`, what is
carried between looks in `coalmine.core.sequential`, and the `Tracker` that
folds successive verdicts into an action in `coalmine.core.tracker` (all
re-exported here).

Every tested metric is a rate compared between the channels with an
anytime-valid sequential test (`coalmine.core.stats.RateTest`), so the chance
that a canary no worse than stable ever fails it, over all the looks of a
release, is at most ``1 - confidence`` split evenly over the tested metrics
of every function judged together (``functions``):

* error rate: errors per request;
* a latency quantile: the share of requests slower than stable's quantile
  (exceedances), which catches a shift of the whole distribution and a worse
  tail with the same median alike, and never fails a canary that is only
  more (or less) variable where the quantile does not move.

A metric **fails** when its test shows the canary worse than stable at the
configured confidence and the measured change is beyond half its limit
(`EFFECT_FLOOR`: a real but tiny change, provable on a busy function, is not a
regression); it is **inconclusive** when the change is beyond the limit but
not proven yet, or when there is too little traffic (below ``min_requests``);
otherwise it **passes**. The limit is the regression the judge must catch:
each metric also reports how many canary requests it needs to catch one of
exactly that size with probability ``power`` (`coalmine.core.stats.evidence_needed`,
from the limit, stable's error rate or latency distribution, and the canary's
share of the traffic), and a step waits until every metric has them
(`Verdict.ready`).

Metrics from a statistics store (`coalmine.core.summary.SummarizedMetrics`,
from CloudWatch) carry exact counts but only a percentile per side for
latency: the error-rate test is the same; a latency quantile within the
limit passes, and one beyond it is ``inconclusive`` (no distribution, so no
test can say the difference is real, and no evidence to wait for): latency
alone never fails a canary judged from percentiles. Too little traffic on
either side makes every metric inconclusive (the verdict is *waiting*):
never a silent pass and never a rollback on its own; with no call on either
side the verdict is also *idle* (`Verdict.idle`: nothing to judge, see
`coalmine.core.gate`). The comparison is always
against stable in the same window, look by look, so a fault stable shares
(an alarm already firing before the release, a dependency failing for
everyone) is reported and not attributed to the canary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard

from coalmine.core.analysis import AnalysisSettings, CustomCheck, ErrorRateCheck, LatencyCheck
from coalmine.core.errors import InvalidInput
from coalmine.core.histogram import LatencyHistogram
from coalmine.core.sequential import (
    Increment,
    JudgeState,
    MetricState,
    error_look,
    exceedance_look,
)
from coalmine.core.stats import RateTest, evidence_needed
from coalmine.core.summary import LatencySummary, SummarizedMetrics
from coalmine.core.tracker import Action, Tracker
from coalmine.core.verdict import MetricResult, Outcome, Verdict

__all__ = [
    "EFFECT_FLOOR",
    "Action",
    "JudgeState",
    "MetricResult",
    "Outcome",
    "RateTest",
    "Tracker",
    "Traffic",
    "Verdict",
    "judge",
]

EFFECT_FLOOR = 0.5
"""The share of a metric's limit its measured change must exceed for it to fail: with a
+1 pp limit, a canary proven worse than stable fails only when it is more than 0.5 pp
worse (the limit itself is the regression the judge must catch, with ``power``)."""


class Traffic(Protocol):
    """What the judge reads of one channel's window: `VersionMetrics` is one."""

    @property
    def requests(self) -> int: ...

    @property
    def errors(self) -> int: ...

    @property
    def histogram(self) -> LatencyHistogram: ...


@dataclass(frozen=True, slots=True)
class _Look:
    """What every metric of one look shares."""

    tests: int
    """metrics tested together (this function's times ``functions``): alpha is split over them"""
    power: float
    min_requests: int
    gate: str | None
    """why every metric is inconclusive for want of data, or None"""

    def alpha(self, confidence: float) -> float:
        return (1 - confidence) / self.tests


# -- formatting ------------------------------------------------------------------------


def _trim(value: float, decimals: int) -> str:
    text = f"{value:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _ms(value: float) -> str:
    for limit, decimals in ((100, 0), (10, 1), (1, 2)):
        if value >= limit:
            return f"{value:,.{decimals}f} ms"
    return f"{value:.3g} ms"


def _percent(rate: float) -> str:
    """A rate in [0, 1] as a percentage: 0.08 -> '8%', 0.003 -> '0.3%'."""
    return f"{_trim(rate * 100, 2)}%"


def _relative(change: float) -> str:
    if not math.isfinite(change):
        return "stable at 0"
    return f"{change:+.0f}%" if abs(change) >= 10 else f"{change:+.1f}%"


def _pp(change: float) -> str:
    sign = "+" if change >= 0 else "-"
    return f"{sign}{_trim(abs(change), 2)} pp"


def _p(p: float) -> str:
    return "p<0.0001" if p < 1e-4 else f"p={p:.2g}"


def _alpha(alpha: float) -> str:
    return f"{alpha:.2g}"


def _plain(value: float) -> str:
    return f"{value:.4g}"


def _quantile_label(check: LatencyCheck) -> str:
    return check.name.removeprefix("latency_")


# -- the metrics -----------------------------------------------------------------------


def _share(inc: Increment, canary: int, stable: int) -> float | None:
    """The canary's share of the trials: the last look's, else the whole window's."""
    share = inc.canary_share
    if share is None and canary and stable:
        share = canary / (canary + stable)
    return share


def _needed(
    stable_rate: float,
    canary_rate: float,
    share: float | None,
    alpha: float,
    look: _Look,
    phi: float,
) -> int | None:
    if share is None:
        return None
    n = evidence_needed(stable_rate, canary_rate, share, alpha, look.power, phi)
    return None if n is None else max(look.min_requests, math.ceil(n))


def _fails(p: float, alpha: float, change: float, limit: float) -> bool:
    return p < alpha and change > EFFECT_FLOOR * limit


def _error_rate(
    check: ErrorRateCheck, canary: Traffic, stable: Traffic, prior: MetricState | None, look: _Look
) -> tuple[MetricResult, MetricState]:
    state, inc = error_look(prior, canary.errors, canary.requests, stable.errors, stable.requests)
    alpha = look.alpha(check.confidence)
    limit = check.max_increase_pp
    needed = None
    if stable.requests:
        # stable's rate, kept off zero (Jeffreys): a baseline with no errors yet
        rs_prior = (stable.errors + 0.5) / (stable.requests + 1)
        share = _share(inc, canary.requests, stable.requests)
        needed = _needed(
            rs_prior, min(1.0, rs_prior + limit / 100), share, alpha, look, state.test.phi
        )
    evidence: dict[str, Any] = {"evidence": canary.requests, "needed": needed}
    if look.gate is not None:
        return MetricResult("error_rate", Outcome.INCONCLUSIVE, look.gate, **evidence), state
    rc = canary.errors / canary.requests
    rs = stable.errors / stable.requests
    diff = (rc - rs) * 100
    head = (
        f"canary errors {_percent(rc)} ({canary.errors:,} of {canary.requests:,}) vs stable"
        f" {_percent(rs)} ({stable.errors:,} of {stable.requests:,}), {_pp(diff)},"
        f" limit +{_trim(limit, 2)} pp"
    )
    p = state.test.p_value
    numbers: dict[str, Any] = {
        "canary": rc * 100,
        "stable": rs * 100,
        "change": diff,
        "limit": limit,
        "change_unit": "pp",
        "p_value": p,
        **evidence,
    }
    stable_high = rs * 100 > limit and rc * 100 > limit
    if _fails(p, alpha, diff, limit):
        note = ""
        if stable_high:
            note = (
                f"stable is also at {_percent(rs)} errors, but the canary adds"
                f" {_trim(diff, 2)} pp more"
            )
        within = " (within the limit, but proven worse than stable)" if diff <= limit else ""
        reason = f"{head}{within} ({_p(p)})" + (f"; {note}" if note else "")
        return MetricResult("error_rate", Outcome.FAIL, reason, note=note, **numbers), state
    if diff <= limit:
        note = ""
        if stable_high:
            note = f"stable is also at {_percent(rs)} errors: not attributable to the canary"
        elif diff <= -limit:
            note = f"the canary has fewer errors than stable ({_percent(rc)} vs {_percent(rs)})"
        reason = f"{head}; {note}" if note else head
        return MetricResult("error_rate", Outcome.PASS, reason, note=note, **numbers), state
    note = ""
    if stable_high:
        note = (
            f"stable is also at {_percent(rs)} errors, but the canary adds {_trim(diff, 2)} pp more"
        )
    reason = f"{head}, not significant yet ({_p(p)}, need p<{_alpha(alpha)})" + (
        f"; {note}" if note else ""
    )
    return MetricResult("error_rate", Outcome.INCONCLUSIVE, reason, note=note, **numbers), state


def _too_few(
    check: LatencyCheck, canary: int, stable: int, min_requests: int, **evidence: Any
) -> MetricResult | None:
    """The inconclusive result of a latency check short of measurements, else None."""
    if canary >= min_requests and stable >= min_requests:
        return None
    return MetricResult(
        check.name,
        Outcome.INCONCLUSIVE,
        f"too few latency measurements for {_quantile_label(check)} (canary {canary:,},"
        f" stable {stable:,}, need {min_requests:,} each)",
        **evidence,
    )


def _compared(
    check: LatencyCheck, c: float, s: float, source: str = ""
) -> tuple[float, float, str, dict[str, Any]]:
    """The change of canary ``c`` over stable ``s`` (%), the limit, the sentence and numbers."""
    change = (c / s - 1) * 100 if s > 0 else (0.0 if c <= 0 else math.inf)
    limit = check.max_increase_pct
    head = (
        f"canary {_quantile_label(check)} {_ms(c)} vs stable {_ms(s)} ({_relative(change)}),"
        f" limit +{_trim(limit, 2)}%{source}"
    )
    numbers: dict[str, Any] = {
        "canary": c,
        "stable": s,
        "change": change,
        "limit": limit,
        "change_unit": "%",
    }
    return change, limit, head, numbers


def _latency_needed(
    check: LatencyCheck,
    canary: LatencyHistogram,
    stable: LatencyHistogram,
    state: MetricState,
    inc: Increment,
    alpha: float,
    look: _Look,
) -> int | None:
    """Canary latencies the quantile's test needs to catch a canary slower than stable
    by exactly the limit (every stable latency times ``1 + limit``) with ``power``."""
    if not stable.count:
        return None
    bucket = stable.quantile_bucket(check.quantile)
    stable_rate = stable.count_above_bucket(bucket) / stable.count
    top = stable.bounds(bucket)[1] if bucket is not None else stable.min_value
    # a canary at the limit is slower than `top` as often as stable is slower than this
    canary_rate = stable.count_above(top / (1 + check.max_increase_pct / 100)) / stable.count
    share = _share(inc, canary.count, stable.count)
    return _needed(stable_rate, canary_rate, share, alpha, look, state.test.phi)


def _latency(
    check: LatencyCheck,
    canary: LatencyHistogram,
    stable: LatencyHistogram,
    prior: MetricState | None,
    look: _Look,
) -> tuple[MetricResult, MetricState]:
    name, label = check.name, _quantile_label(check)
    state, inc = exceedance_look(prior, check.quantile, canary, stable)
    alpha = look.alpha(check.confidence)
    needed = _latency_needed(check, canary, stable, state, inc, alpha, look)
    evidence: dict[str, Any] = {"evidence": canary.count, "needed": needed}
    if look.gate is not None:
        return MetricResult(name, Outcome.INCONCLUSIVE, look.gate, **evidence), state
    few = _too_few(check, canary.count, stable.count, look.min_requests, **evidence)
    if few is not None:
        return few, state
    c = canary.quantile(check.quantile)
    s = stable.quantile(check.quantile)
    if c is None or s is None:  # pragma: no cover - both histograms hold values here
        raise AssertionError("empty histogram past the traffic check")
    change, limit, head, numbers = _compared(check, c, s)
    p = state.test.p_value
    numbers.update(p_value=p, **evidence)
    bucket = stable.quantile_bucket(check.quantile)
    c_above, s_above = canary.count_above_bucket(bucket), stable.count_above_bucket(bucket)
    detail = (
        f"{_percent(c_above / canary.count)} of canary requests are slower than stable's"
        f" {label} vs {_percent(s_above / stable.count)} of stable's"
    )
    if _fails(p, alpha, change, limit):
        within = " (within the limit, but proven worse than stable)" if change <= limit else ""
        return MetricResult(
            name, Outcome.FAIL, f"{head}{within}; {detail} ({_p(p)})", **numbers
        ), state
    if change <= limit:
        return MetricResult(name, Outcome.PASS, head, **numbers), state
    return MetricResult(
        name,
        Outcome.INCONCLUSIVE,
        f"{head}, not significant yet: {detail} ({_p(p)}, need p<{_alpha(alpha)})",
        **numbers,
    ), state


def _latency_summary(
    check: LatencyCheck, canary: LatencySummary, stable: LatencySummary, min_requests: int
) -> MetricResult:
    """A latency quantile from one percentile per side: pass within the limit, else
    inconclusive (there is no distribution to test)."""
    name, label, source = check.name, _quantile_label(check), canary.source
    few = _too_few(check, canary.count, stable.count, min_requests)
    if few is not None:
        return few
    c, s = canary.quantile(check.quantile), stable.quantile(check.quantile)
    if c is None or s is None:
        return MetricResult(
            name,
            Outcome.INCONCLUSIVE,
            f"{source} gave no {label} (canary {c!r}, stable {s!r})",
        )
    change, limit, head, numbers = _compared(check, c, s, f" ({source} percentiles)")
    if change <= limit:
        return MetricResult(name, Outcome.PASS, head, **numbers)
    return MetricResult(
        name,
        Outcome.INCONCLUSIVE,
        f"{head}; {source} gives one {label} per side, not the distributions: no test can say"
        " the difference is real, so it cannot fail the canary",
        **numbers,
    )


def _summaries(canary: Traffic, stable: Traffic) -> tuple[LatencySummary, LatencySummary] | None:
    """Both sides' latency summaries, or None when both have histograms."""
    c, s = isinstance(canary, SummarizedMetrics), isinstance(stable, SummarizedMetrics)
    if c != s:
        raise InvalidInput(
            "canary and stable metrics must come from one source: one has percentiles only,"
            " the other a histogram"
        )
    if isinstance(canary, SummarizedMetrics) and isinstance(stable, SummarizedMetrics):
        return canary.summary, stable.summary
    return None


def _is_number(value: object) -> TypeGuard[float]:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _custom(check: CustomCheck, values: tuple[float | None, float | None] | None) -> MetricResult:
    name = check.name
    c, s = values if values is not None else (None, None)
    if not _is_number(c) or not _is_number(s):
        return MetricResult(
            name,
            Outcome.INCONCLUSIVE,
            f"no value for custom metric {name} (canary {c!r}, stable {s!r})",
        )
    if check.max_increase_pct is not None:
        limit = check.max_increase_pct
        change = (c - s) / abs(s) * 100 if s != 0 else (0.0 if c <= 0 else math.inf)
        text = f"{_relative(change)}, limit +{_trim(limit, 2)}%"
        unit = "%"
    else:
        limit = check.max_increase if check.max_increase is not None else 0.0
        change = c - s
        text = f"{change:+.4g}, limit +{_plain(limit)}"
        unit = ""
    outcome = Outcome.FAIL if change > limit else Outcome.PASS
    reason = f"canary {name} {_plain(c)} vs stable {_plain(s)} ({text})"
    return MetricResult(name, outcome, reason, c, s, change, limit, unit)


def _traffic_gate(canary: Traffic, stable: Traffic, min_requests: int) -> str | None:
    cr, sr = canary.requests, stable.requests
    if cr == 0 and sr == 0:
        return "no data: neither canary nor stable served a request in this window"
    short = []
    if cr < min_requests:
        short.append(("canary", cr))
    if sr < min_requests:
        short.append(("stable", sr))
    if not short:
        return None
    if len(short) == 2:
        return (
            f"too little traffic (canary {cr:,} and stable {sr:,} requests,"
            f" need {min_requests:,} each)"
        )
    side, n = short[0]
    return f"too little traffic ({side} {n:,} requests, need {min_requests:,})"


def _check_traffic(side: str, traffic: Traffic) -> None:
    requests, errors = traffic.requests, traffic.errors
    if isinstance(requests, bool) or not isinstance(requests, int) or requests < 0:
        raise InvalidInput(f"{side} requests must be a whole number >= 0, got {requests!r}")
    if isinstance(errors, bool) or not isinstance(errors, int) or not 0 <= errors <= requests:
        raise InvalidInput(f"{side} errors must be a whole number from 0 to its requests")
    if not isinstance(traffic.histogram, LatencyHistogram):
        raise InvalidInput(f"{side} histogram must be a LatencyHistogram")


# -- the judge -------------------------------------------------------------------------


def judge(
    canary: Traffic,
    stable: Traffic,
    settings: AnalysisSettings | None = None,
    *,
    custom: Mapping[str, tuple[float | None, float | None]] | None = None,
    state: JudgeState | None = None,
    functions: int = 1,
) -> Verdict:
    """Compare ``canary`` against ``stable`` over the same window (everything each served
    since the release started).

    ``state`` is the previous look's (`Verdict.state`; None at the first
    look): the tests continue from it, so each look adds only what came
    since. ``functions`` is how many functions are judged together (the
    confidence is split over all their tested metrics). ``custom`` gives
    each configured custom metric's ``(canary, stable)`` values. Raises
    InvalidInput only for malformed input (negative counts, a custom value
    for a metric the settings do not name).
    """
    settings = settings if settings is not None else AnalysisSettings()
    _check_traffic("canary", canary)
    _check_traffic("stable", stable)
    if isinstance(functions, bool) or not isinstance(functions, int) or functions < 1:
        raise InvalidInput(f"functions must be a whole number >= 1, got {functions!r}")
    custom = dict(custom or {})
    unknown = sorted(set(custom) - {c.name for c in settings.custom})
    if unknown:
        raise InvalidInput(
            f"custom value(s) for metric(s) the analysis does not configure: {', '.join(unknown)}"
        )
    if not canary.histogram.same_layout(stable.histogram):
        raise InvalidInput("canary and stable histograms must have the same layout to compare")

    prior = state if state is not None else JudgeState()
    summaries = _summaries(canary, stable)
    tested = (settings.error_rate is not None) + (len(settings.latency) if not summaries else 0)
    gate = _traffic_gate(canary, stable, settings.min_requests)
    look = _Look(max(1, tested) * functions, settings.power, settings.min_requests, gate)
    results: list[MetricResult] = []
    states: dict[str, MetricState] = {}
    if settings.error_rate is not None:
        result, states["error_rate"] = _error_rate(
            settings.error_rate, canary, stable, prior.get("error_rate"), look
        )
        results.append(result)
    for check in settings.latency:
        if summaries is not None:
            few = gate or None
            results.append(
                MetricResult(check.name, Outcome.INCONCLUSIVE, few)
                if few
                else _latency_summary(check, *summaries, settings.min_requests)
            )
            continue
        result, states[check.name] = _latency(
            check, canary.histogram, stable.histogram, prior.get(check.name), look
        )
        results.append(result)
    for custom_check in settings.custom:
        if gate is not None:
            results.append(MetricResult(custom_check.name, Outcome.INCONCLUSIVE, gate))
            continue
        results.append(_custom(custom_check, custom.get(custom_check.name)))
    short = {r.name for r in results if gate is not None or r.reason.startswith("too few")}
    return _verdict(results, canary.requests, stable.requests, JudgeState(states), short)


def _verdict(
    results: list[MetricResult],
    canary_requests: int,
    stable_requests: int,
    state: JudgeState,
    short: set[str],
) -> Verdict:
    outcome = max((r.outcome for r in results), key=lambda o: o.severity, default=Outcome.PASS)
    reasons: list[str] = []
    for r in results:
        if r.outcome is outcome and r.reason not in reasons:
            reasons.append(r.reason)
    notes = tuple(dict.fromkeys(r.note for r in results if r.note))
    inconclusive = {r.name for r in results if r.outcome is Outcome.INCONCLUSIVE}
    return Verdict(
        outcome,
        tuple(results),
        tuple(reasons),
        notes,
        canary_requests,
        stable_requests,
        enough=all(r.enough for r in results),
        waiting=outcome is Outcome.INCONCLUSIVE and inconclusive <= short,
        state=state,
        idle=canary_requests == 0 and stable_requests == 0,
    )
