"""The judge: canary against stable over the same window, metric by metric.

`judge` compares per-version metrics (request and error counters and a
latency histogram per channel) and returns a `Verdict`: ``pass``, ``fail`` or
``inconclusive``, its worst metric's outcome, with one sentence per metric a
person can read. This module owns the per-metric checks and their sentences;
the result types are in `coalmine.core.verdict`, the statistical tests in
`coalmine.core.stats`, and the `Tracker` that folds successive verdicts into
an action in `coalmine.core.tracker` (all re-exported here).

Every failure needs two things: an effect beyond the configured limit (the
canary's error rate more than ``max_increase_pp`` points above stable's, a
latency quantile more than ``max_increase_pct`` percent above stable's) and a
test that says the difference is real at the configured confidence:

* error rate: Fisher's exact test, one-sided, on the 2x2 table of errors and
  successes, against a margin of half the limit (stable's row gets that many
  more errors); exact for sparse errors (6 of 1,000 against 0 of 9,000);
* central latency quantiles (below p90): the Mann-Whitney U test, one-sided,
  computed from the two histograms' bucket counts (exact for binned data,
  with the tie correction; normal approximation with continuity correction);
* tail latency quantiles (p90 and above): Fisher's exact test on the share of
  requests slower than stable's quantile: a canary no slower in the middle
  but with a worse tail is caught here, where a rank test is blind.

An effect beyond the limit without significance is ``inconclusive``; within
the limit is ``pass``.

Metrics from a statistics store (`coalmine.core.summary.SummarizedMetrics`,
from CloudWatch) carry exact counts but only a percentile per side for
latency: the error-rate test is the same; a latency quantile within the
limit passes, and one beyond it is ``inconclusive`` (no distribution, so no
test can say the difference is real): latency alone never fails a canary
judged from percentiles. Too little traffic on either side (below
``min_requests``) makes every metric inconclusive: never a silent pass and
never a rollback on its own. The comparison is always against stable in the
same window, so a fault stable shares (an alarm already firing before the
release, a dependency failing for everyone) is reported and not attributed
to the canary.

scipy is imported only when a test is computed (it is part of the
``server`` extra), so ``import coalmine`` stays light.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol, TypeGuard

from coalmine.core.analysis import AnalysisSettings, CustomCheck, ErrorRateCheck, LatencyCheck
from coalmine.core.errors import InvalidInput
from coalmine.core.histogram import LatencyHistogram
from coalmine.core.stats import MannWhitney, fisher_greater, mann_whitney
from coalmine.core.summary import LatencySummary, SummarizedMetrics
from coalmine.core.tracker import Action, Tracker
from coalmine.core.verdict import MetricResult, Outcome, Verdict

__all__ = [
    "ERROR_MARGIN",
    "TAIL_QUANTILE",
    "Action",
    "MannWhitney",
    "MetricResult",
    "Outcome",
    "Tracker",
    "Traffic",
    "Verdict",
    "fisher_greater",
    "judge",
    "mann_whitney",
]

TAIL_QUANTILE = 0.9
"""Latency quantiles from this one up are judged with the tail test, below with Mann-Whitney U."""
ERROR_MARGIN = 0.5
"""The share of the error-rate limit the exact test must exclude: with a +1 pp limit,
a failure needs evidence that the canary is more than 0.5 pp above stable, not just
above it (a test against zero, repeated every interval, fails too many good canaries)."""


class Traffic(Protocol):
    """What the judge reads of one channel's window: `VersionMetrics` is one."""

    @property
    def requests(self) -> int: ...

    @property
    def errors(self) -> int: ...

    @property
    def histogram(self) -> LatencyHistogram: ...


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


def _plain(value: float) -> str:
    return f"{value:.4g}"


def _quantile_label(check: LatencyCheck) -> str:
    return check.name.removeprefix("latency_")


# -- the metrics -----------------------------------------------------------------------


def _error_rate(check: ErrorRateCheck, canary: Traffic, stable: Traffic) -> MetricResult:
    rc = canary.errors / canary.requests
    rs = stable.errors / stable.requests
    diff = (rc - rs) * 100
    limit = check.max_increase_pp
    head = (
        f"canary errors {_percent(rc)} ({canary.errors:,} of {canary.requests:,}) vs stable"
        f" {_percent(rs)} ({stable.errors:,} of {stable.requests:,}), {_pp(diff)},"
        f" limit +{_trim(limit, 2)} pp"
    )
    numbers: dict[str, Any] = {
        "canary": rc * 100,
        "stable": rs * 100,
        "change": diff,
        "limit": limit,
        "change_unit": "pp",
    }
    stable_high = rs * 100 > limit and rc * 100 > limit
    if diff <= limit:
        note = ""
        if stable_high:
            note = f"stable is also at {_percent(rs)} errors: not attributable to the canary"
        elif diff <= -limit:
            note = f"the canary has fewer errors than stable ({_percent(rc)} vs {_percent(rs)})"
        reason = f"{head}; {note}" if note else head
        return MetricResult("error_rate", Outcome.PASS, reason, note=note, **numbers)
    # Fisher's exact test against a margin: stable's row gets the margin's worth of
    # errors, so the test asks whether the canary is more than the margin above stable.
    margin = round(limit * ERROR_MARGIN / 100 * stable.requests)
    shifted = min(stable.requests, stable.errors + margin)
    p = fisher_greater(canary.errors, canary.requests, shifted, stable.requests)
    alpha = 1 - check.confidence
    note = ""
    if stable_high:
        note = (
            f"stable is also at {_percent(rs)} errors, but the canary adds {_trim(diff, 2)} pp more"
        )
    if p < alpha:
        reason = f"{head} ({_p(p)})" + (f"; {note}" if note else "")
        return MetricResult("error_rate", Outcome.FAIL, reason, p_value=p, note=note, **numbers)
    reason = f"{head}, not significant yet ({_p(p)}, need p<{_trim(alpha, 4)})" + (
        f"; {note}" if note else ""
    )
    return MetricResult("error_rate", Outcome.INCONCLUSIVE, reason, p_value=p, note=note, **numbers)


def _too_few(
    check: LatencyCheck, canary: int, stable: int, min_requests: int
) -> MetricResult | None:
    """The inconclusive result of a latency check short of measurements, else None."""
    if canary >= min_requests and stable >= min_requests:
        return None
    return MetricResult(
        check.name,
        Outcome.INCONCLUSIVE,
        f"too few latency measurements for {_quantile_label(check)} (canary {canary:,},"
        f" stable {stable:,}, need {min_requests:,} each)",
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


def _latency(
    check: LatencyCheck, canary: LatencyHistogram, stable: LatencyHistogram, min_requests: int
) -> MetricResult:
    name, label = check.name, _quantile_label(check)
    few = _too_few(check, canary.count, stable.count, min_requests)
    if few is not None:
        return few
    c = canary.quantile(check.quantile)
    s = stable.quantile(check.quantile)
    if c is None or s is None:  # pragma: no cover - both histograms hold values here
        raise AssertionError("empty histogram past the traffic check")
    change, limit, head, numbers = _compared(check, c, s)
    if change <= limit:
        return MetricResult(name, Outcome.PASS, head, **numbers)
    if check.quantile >= TAIL_QUANTILE:
        c_above, s_above = canary.count_above(s), stable.count_above(s)
        p = fisher_greater(c_above, canary.count, s_above, stable.count)
        detail = (
            f"{_percent(c_above / canary.count)} of canary requests are slower than stable's"
            f" {label} vs {_percent(s_above / stable.count)} of stable's"
        )
    else:
        mw = mann_whitney(canary, stable)
        p = mw.p_greater
        detail = f"Mann-Whitney U: the canary is slower in {mw.share:.0%} of request pairs"
    alpha = 1 - check.confidence
    if p < alpha:
        return MetricResult(name, Outcome.FAIL, f"{head}; {detail} ({_p(p)})", p_value=p, **numbers)
    return MetricResult(
        name,
        Outcome.INCONCLUSIVE,
        f"{head}, not significant yet: {detail} ({_p(p)}, need p<{_trim(alpha, 4)})",
        p_value=p,
        **numbers,
    )


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


# -- the judge -------------------------------------------------------------------------


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


def judge(
    canary: Traffic,
    stable: Traffic,
    settings: AnalysisSettings | None = None,
    *,
    custom: Mapping[str, tuple[float | None, float | None]] | None = None,
) -> Verdict:
    """Compare ``canary`` against ``stable`` over the same window.

    ``custom`` gives each configured custom metric's ``(canary, stable)``
    values. Raises InvalidInput only for malformed input (negative counts, a
    custom value for a metric the settings do not name).
    """
    settings = settings if settings is not None else AnalysisSettings()
    _check_traffic("canary", canary)
    _check_traffic("stable", stable)
    custom = dict(custom or {})
    unknown = sorted(set(custom) - {c.name for c in settings.custom})
    if unknown:
        raise InvalidInput(
            f"custom value(s) for metric(s) the analysis does not configure: {', '.join(unknown)}"
        )
    if not canary.histogram.same_layout(stable.histogram):
        raise InvalidInput("canary and stable histograms must have the same layout to compare")

    summaries = _summaries(canary, stable)
    gate = _traffic_gate(canary, stable, settings.min_requests)
    results: list[MetricResult] = []
    if gate is not None:
        results = [MetricResult(name, Outcome.INCONCLUSIVE, gate) for name in settings.metric_names]
    else:
        if settings.error_rate is not None:
            results.append(_error_rate(settings.error_rate, canary, stable))
        for check in settings.latency:
            if summaries is not None:
                results.append(_latency_summary(check, *summaries, settings.min_requests))
                continue
            results.append(
                _latency(check, canary.histogram, stable.histogram, settings.min_requests)
            )
        for custom_check in settings.custom:
            results.append(_custom(custom_check, custom.get(custom_check.name)))
    return _verdict(results, canary.requests, stable.requests)


def _verdict(results: list[MetricResult], canary_requests: int, stable_requests: int) -> Verdict:
    outcome = max((r.outcome for r in results), key=lambda o: o.severity, default=Outcome.PASS)
    reasons: list[str] = []
    for r in results:
        if r.outcome is outcome and r.reason not in reasons:
            reasons.append(r.reason)
    notes = tuple(dict.fromkeys(r.note for r in results if r.note))
    return Verdict(outcome, tuple(results), tuple(reasons), notes, canary_requests, stable_requests)
