"""Whether each judge catches a bad canary before it is promoted, how fast, and how often it rolls back a good one.

Simulated releases at 10% canary, at two traffic levels, many seeded trials per
scenario; three judges:

* ``coalmine``: the judge with the default `AnalysisSettings` (error rate
  +1 pp, p50/p95/p99 +20%, 99% confidence split over the four metrics, power
  0.9, min 200 requests, roll back on the first failed look, wait up to 1 h
  past a step's hold for evidence). Its anytime-valid tests, the evidence each
  metric needs, the tracker and the evidence gate are computed by
  `bench/_judge_twin.py` for all trials at once, from each look's simulated
  sufficient statistics: per channel a latency histogram on the judge's
  buckets (a multinomial draw: exactly the bucket counts of that many
  lognormal requests), requests and errors (tests/bench checks the twin
  against the real judge look by look). The release holds its 10% step for
  ``--intervals`` one-minute looks, then is promoted at the first look whose
  verdict passes on enough evidence; it pauses when the evidence has not come
  1 h after the hold (or after 6 inconclusive looks in a row), and the
  simulated operator resumes it at once ("more time"), until a verdict or
  ``--max-looks``.
* ``alias_alarm``: what a CloudWatch alarm on a Lambda weighted alias sees:
  the p99 latency and the error rate of *all* traffic (canary and stable
  mixed) in each interval, breaching when p99 > 1.2x the pre-release p99 or
  the error rate > the pre-release rate + 1 pp (both measured on 5 intervals
  of stable-only traffic before the release); 2 breaching intervals in a row
  roll back (CloudWatch's "2 out of 2 datapoints"); otherwise the release is
  promoted when the hold ends.
* ``kayenta``: the classifier of Kayenta's NetflixACAJudge with its defaults
  (``MannWhitneyClassifier(tolerance = 0.25, confLevel = 0.98)``, direction
  ``either``) on the *raw samples of each interval*: per-request latencies,
  and per-request error indicators (1 failed, 0 succeeded; with
  ``--kayenta-errors series``, the error ratios of the interval's ten slices,
  the time series a metrics store would give it instead, against a baseline of
  as many stable requests as the canary's, as Kayenta prescribes). For each metric:
  the Hodges-Lehmann estimate of the shift canary - stable and its 98%
  confidence interval (the order statistics of the m x n pairwise differences
  at ranks ``mn/2 -+ z sqrt(mn(m+n+1)/12)``, the normal approximation R's
  ``wilcox.test`` also uses); the metric is High when the interval's lower
  bound is above ``0.25 x |estimate|`` and Low when its upper bound is below
  ``-0.25 x |estimate|``; identical or all-tied data passes. An interval fails
  when any metric is High or Low; 2 failed intervals in a row roll back, the
  same rule as the alias alarm; otherwise promoted when the hold ends. Outlier
  removal is off. Per-request samples make it the slow judge: it runs
  ``--peer-trials`` trials (as does the alias alarm), each its own draw of
  the same scenario.

Traffic: ``default`` 2,500 requests a minute (250 canary), ``low`` 250 a
minute (25 canary); latency lognormal with median 100 ms and sigma 0.5 (p99
320 ms); 1% errors. Scenarios, with the default limits (p99 +20%, errors +1 pp):

* regressions (a rollback is a detection; a promotion is a bad canary
  promoted): today's ``p99x1.5`` (every canary latency x1.5), ``errors+2pp``,
  ``tail_only`` (canary sigma raised so its median is stable's but its p99 is
  1.5x); each limit exactly: ``p99x1.2``, ``tail_only_x1.2``, ``errors+1pp``;
  and 1.5x each limit: ``p99x1.3``, ``tail_only_x1.3``, ``errors+1.5pp``;
* innocent canaries (any rollback is a false rollback), held 20 and 200
  looks (``_200``): ``aa`` (A/A: canary identical to stable),
  ``shared_incident`` (from the 5th minute a dependency fails for everyone:
  +3 pp errors and x1.3 latency on both channels), ``fix_forward`` (stable
  already at 8% errors, an alarm that was firing before the release; the
  canary is the fix at 1%); and, beyond the issue's runs and its goals,
  ``aa_sticky``: A/A where every failing user fails 3 requests in a row
  within a look (correlated requests, which the judge can only measure once
  they have shown across a few looks).

Every rate comes with its 95% Clopper-Pearson interval. Run it from the
repository root::

    .venv/bin/python bench/detection.py                        # 1,000 trials (2,000 innocent, 100 for the peers)
    .venv/bin/python bench/detection.py --trials 20 --peer-trials 2   # the smoke test's run

It prints a table, the goals with PASS or MISS, and last one JSON line::

    {"bench": "detection", "trials": .., "detection_rate": {"coalmine": {"p99x1.5@default": ..},
     "alias_alarm": {..}, "kayenta": {..}}, "median_canary_requests": {..},
     "false_rollback_rate": {"coalmine": .., ..}, ..., "promoted_bad_rate": {..},
     "promoted_bad_1_5x_limits": {"coalmine": {"default": [rate, low, high], "low": [..]}, ..},
     "false_rollback_ci": {"coalmine": [rate, low, high], ..}}

A MISS is reported, not turned into a failing exit status.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from _judge_twin import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    JudgeTwin,
    bucket_probabilities,
)
from _table import print_aligned
from coalmine.core.analysis import AnalysisSettings

JUDGES = ("coalmine", "alias_alarm", "kayenta")
TRAFFIC = {"default": 2500, "low": 250}
MEDIAN_MS = 100.0
SIGMA = 0.5
BASE_ERROR = 0.01
PRE_INTERVALS = 5
PEER_FAILURE_LIMIT = 2
ALIAS_P99_FACTOR = 1.2
ALIAS_ERROR_PP = 1.0
KAYENTA_CONFIDENCE = 0.98
KAYENTA_TOLERANCE = 0.25
INCIDENT_FROM = 5
INCIDENT_ERRORS = 0.03
INCIDENT_LATENCY = 1.3
FIX_FORWARD_STABLE_ERRORS = 0.08
STICKY_BURST = 3
"""aa_sticky: every failing user fails this many requests in a row, in one look"""
SLICES = 10
Z_TAIL_P99 = 2.3263478740408408  # the standard normal's 0.99 quantile
TODAY = {"p99x1.5": 500, "errors+2pp": 1000, "tail_only": 500}
"""Median canary requests to a rollback of the judge before the sequential tests, at the
default traffic (docs/judge.md as of commit a2272db: 200 trials, `bench/detection.py` then)."""

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class Config:
    trials: int
    """coalmine's trials of each regression"""
    innocent_trials: int
    """coalmine's trials of each innocent run (its false-rollback bound needs more)"""
    peer_trials: int
    hold: int
    """minutes a step is held"""
    long_hold: int
    """minutes the ``_200`` innocent runs' step is held"""
    give_up: int
    """minutes after the hold before a trial is given up (undecided)"""
    canary_share: float
    latency_multiplier: float
    extra_error_pp: float
    tail_multiplier: float
    seed: int
    kayenta_errors: str = "requests"
    """'requests': per-request 0/1 indicators; 'series': error ratios of 10 slices an interval"""
    traffic: dict[str, int] = field(default_factory=lambda: dict(TRAFFIC))
    """requests a minute"""
    look_seconds: float = field(default_factory=lambda: AnalysisSettings().interval)
    """coalmine's analysis interval (the peers look once a minute)"""

    def looks(self, minutes: float) -> int:
        return round(minutes * 60 / self.look_seconds)

    def canary_per_look(self, traffic: str, seconds: float) -> int:
        return round(self.traffic[traffic] * seconds / 60 * self.canary_share)

    def stable_per_look(self, traffic: str, seconds: float) -> int:
        return round(self.traffic[traffic] * seconds / 60) - self.canary_per_look(traffic, seconds)


@dataclass(frozen=True)
class Scenario:
    name: str
    regression: bool
    """True: a rollback is a detection. False: any rollback is a false rollback."""
    group: str
    """'today', 'limit', '1.5x' or 'innocent'"""
    canary_latency_x: float = 1.0
    canary_sigma: float = SIGMA
    canary_errors: float = BASE_ERROR
    stable_errors: float = BASE_ERROR
    incident_from: int | None = None
    burst: int = 1
    """errors come in bursts of this many requests of one user (both channels)"""
    long: bool = False
    """innocent: held ``long_hold`` minutes instead of ``hold``"""

    def hold(self, cfg: Config) -> int:
        """Minutes the step is held."""
        return cfg.long_hold if self.long else cfg.hold


def _tail_sigma(multiplier: float) -> float:
    return SIGMA + math.log(multiplier) / Z_TAIL_P99


def _regressions(group: str, latency_x: float, tail_x: float, errors_pp: float) -> list[Scenario]:
    return [
        Scenario(f"p99x{latency_x:g}", True, group, canary_latency_x=latency_x),
        Scenario(
            f"errors+{errors_pp:g}pp", True, group, canary_errors=BASE_ERROR + errors_pp / 100
        ),
        Scenario(
            "tail_only" if group == "today" else f"tail_only_x{tail_x:g}",
            True,
            group,
            canary_sigma=_tail_sigma(tail_x),
        ),
    ]


def scenarios(cfg: Config) -> list[Scenario]:
    settings = AnalysisSettings()
    assert settings.error_rate is not None
    latency_limit = settings.latency[-1].max_increase_pct / 100
    errors_limit = settings.error_rate.max_increase_pp
    out = _regressions("today", cfg.latency_multiplier, cfg.tail_multiplier, cfg.extra_error_pp)
    out += _regressions("limit", 1 + latency_limit, 1 + latency_limit, errors_limit)
    out += _regressions(
        "1.5x", 1 + 1.5 * latency_limit, 1 + 1.5 * latency_limit, 1.5 * errors_limit
    )
    for long in (False, True):
        suffix = "_200" if long else ""
        out += [
            Scenario(f"aa{suffix}", False, "innocent", long=long),
            Scenario(
                f"shared_incident{suffix}",
                False,
                "innocent",
                incident_from=INCIDENT_FROM,
                long=long,
            ),
            Scenario(
                f"fix_forward{suffix}",
                False,
                "innocent",
                stable_errors=FIX_FORWARD_STABLE_ERRORS,
                long=long,
            ),
        ]
    # beyond the innocent runs (not in the goals): correlated requests
    out.append(Scenario("aa_sticky", False, "sticky", burst=STICKY_BURST))
    return out


def _conditions(scenario: Scenario, minute: float) -> tuple[float, float, float, float]:
    """(canary latency scale, stable latency scale, canary error rate, stable error rate)
    in the look that starts ``minute`` minutes into the release."""
    incident = scenario.incident_from is not None and minute >= scenario.incident_from - 1
    slow = INCIDENT_LATENCY if incident else 1.0
    extra = INCIDENT_ERRORS if incident else 0.0
    return (
        scenario.canary_latency_x * slow,
        slow,
        scenario.canary_errors + extra,
        scenario.stable_errors + extra,
    )


# -- coalmine: the twin over all trials at once -----------------------------------------


@dataclass
class CoalmineRuns:
    """Per trial: how the release ended (0 undecided, 1 rolled back, 2 promoted) and when."""

    ended: IntArray
    look: IntArray
    evidence_pauses: IntArray
    inconclusive_pauses: IntArray


UNDECIDED, ROLLED_BACK, PROMOTED = 0, 1, 2


def run_coalmine(scenario: Scenario, traffic: str, index: int, cfg: Config) -> CoalmineRuns:
    """Every trial of one scenario at one traffic level, as the controller would run it."""
    rng = np.random.default_rng([cfg.seed, index, list(TRAFFIC).index(traffic), 0])
    settings = AnalysisSettings()
    trials = cfg.trials if scenario.regression else cfg.innocent_trials
    hold = cfg.looks(scenario.hold(cfg))
    max_wait = round(settings.max_wait / cfg.look_seconds)
    nc = cfg.canary_per_look(traffic, cfg.look_seconds)
    ns = cfg.stable_per_look(traffic, cfg.look_seconds)
    ended = np.zeros(trials, dtype=np.int64)
    when = np.zeros(trials, dtype=np.int64)
    evidence_pauses = np.zeros(trials, dtype=np.int64)
    inconclusive_pauses = np.zeros(trials, dtype=np.int64)
    ids = np.arange(trials)
    hold_end = np.full(trials, hold, dtype=np.int64)
    inconclusive_run = np.zeros(trials, dtype=np.int64)
    twin = JudgeTwin(trials, settings)
    probabilities: dict[tuple[float, float], Any] = {}

    def buckets(scale: float, sigma: float) -> Any:
        key = (scale, sigma)
        if key not in probabilities:
            probabilities[key] = bucket_probabilities(MEDIAN_MS * scale, sigma)
        return probabilities[key]

    for look in range(1, hold + cfg.looks(cfg.give_up) + 1):
        if not ids.size:
            break
        t = ids.size
        minute = (look - 1) * cfg.look_seconds / 60
        c_scale, s_scale, c_err, s_err = _conditions(scenario, minute)
        c_hist = rng.multinomial(nc, buckets(c_scale, scenario.canary_sigma), size=t)
        s_hist = rng.multinomial(ns, buckets(s_scale, SIGMA), size=t)
        b = scenario.burst
        c_errors = b * rng.binomial(nc // b, c_err, size=t)
        s_errors = b * rng.binomial(ns // b, s_err, size=t)
        result = twin.look(c_hist, s_hist, c_errors, s_errors, evidence=look >= hold)
        outcome = result.outcome
        rolled = outcome == FAIL  # failure_limit 1: the first failed look rolls back
        counted = (outcome == INCONCLUSIVE) & ~result.waiting
        inconclusive_run = np.where(counted, inconclusive_run + 1, inconclusive_run)
        inconclusive_run = np.where(outcome == PASS, 0, inconclusive_run)
        paused = inconclusive_run > settings.max_inconclusive
        inconclusive_pauses[ids[paused]] += 1
        inconclusive_run[paused] = 0  # the operator resumes: the count starts again
        hold_end = np.where(paused & (look >= hold_end), look, hold_end)
        promoted = np.zeros(t, dtype=bool)
        if result.enough is not None:
            promoted = ~rolled & ~paused & result.enough & (outcome == PASS)
            stalled = ~rolled & ~promoted & ~paused & (look - hold_end >= max_wait)
            evidence_pauses[ids[stalled]] += 1
            hold_end = np.where(stalled, look, hold_end)  # resumed: it waits max_wait again
        ended[ids[rolled]] = ROLLED_BACK
        ended[ids[promoted]] = PROMOTED
        done = rolled | promoted
        when[ids[done]] = look
        if done.any():
            keep = ~done
            ids, hold_end, inconclusive_run = ids[keep], hold_end[keep], inconclusive_run[keep]
            twin.take(keep)
    return CoalmineRuns(ended, when, evidence_pauses, inconclusive_pauses)


# -- Kayenta's classifier ---------------------------------------------------------------

_Z_KAYENTA = statistics.NormalDist().inv_cdf(1 - (1 - KAYENTA_CONFIDENCE) / 2)


def _pairwise_order_stats(x: FloatArray, y: FloatArray, ranks: Sequence[int]) -> FloatArray:
    """The given 1-based order statistics of all differences x_i - y_j, by bisection."""
    xs, ys = np.sort(x), np.sort(y)
    m, n = xs.size, ys.size
    # lo strictly below the smallest difference, hi at the largest: count(lo) < rank <= count(hi)
    smallest, largest = float(xs[0] - ys[-1]), float(xs[-1] - ys[0])
    lo = np.full(len(ranks), smallest - 1e-3 * (largest - smallest) - 1e-12, dtype=np.float64)
    hi = np.full(len(ranks), largest, dtype=np.float64)
    want = np.asarray(ranks, dtype=np.int64)
    # 22 halvings leave each bracket range / 4 million wide (under a microsecond for
    # latencies spanning seconds); the snap below then makes the bounds exact.
    for _ in range(22):
        mid = (lo + hi) / 2
        # pairs with x_i - y_j <= mid, i.e. y_j >= x_i - mid
        queries = (xs[None, :] - mid[:, None]).ravel()
        below = np.searchsorted(ys, queries, side="left").reshape(len(ranks), m)
        enough = (n * m - below.sum(axis=1)) >= want
        hi = np.where(enough, mid, hi)
        lo = np.where(enough, lo, mid)
    # Snap each bound to the smallest actual difference in (lo, hi]: exact for
    # discrete data (error ratios, ties), where hi would sit just above the value.
    out = hi.copy()
    for row in range(len(ranks)):
        idx = np.searchsorted(ys, xs - lo[row], side="left") - 1
        ok = idx >= 0
        diffs = xs[ok] - ys[idx[ok]]
        diffs = diffs[(diffs > lo[row]) & (diffs <= hi[row])]
        if diffs.size:
            smallest = diffs.min()
            pairs = m * n - int(np.searchsorted(ys, xs - smallest, side="left").sum())
            if pairs >= want[row]:  # else two values share the bracket: keep hi
                out[row] = smallest
    return out


def _binary_order_stats(x: BoolArray, y: BoolArray, ranks: Sequence[int]) -> FloatArray:
    """Order statistics of x_i - y_j for 0/1 data, counted exactly."""
    x1, y1 = int(x.sum()), int(y.sum())
    x0, y0 = x.size - x1, y.size - y1
    minus, plus = x0 * y1, x1 * y0  # differences of -1 and +1
    zero = x.size * y.size - minus - plus
    out = [-1.0 if r <= minus else 0.0 if r <= minus + zero else 1.0 for r in ranks]
    return np.asarray(out, dtype=np.float64)


def kayenta_classify(canary: FloatArray | BoolArray, stable: FloatArray | BoolArray) -> str:
    """'High', 'Low' or 'Pass' for one metric, as Kayenta's MannWhitneyClassifier."""
    if canary.size == 0 or stable.size == 0:
        return "Nodata"
    if canary.size == stable.size and np.array_equal(np.sort(canary), np.sort(stable)):
        return "Pass"
    if np.unique(np.concatenate([canary, stable])).size == 1:
        return "Pass"
    m, n = canary.size, stable.size
    mn = m * n
    k = max(1, math.floor(mn / 2 - _Z_KAYENTA * math.sqrt(mn * (m + n + 1) / 12)))
    ranks = [k, mn - k + 1, (mn + 1) // 2]
    if canary.dtype == np.bool_:
        lower, upper, estimate = _binary_order_stats(canary, stable, ranks)  # type: ignore[arg-type]
    else:
        lower, upper, estimate = _pairwise_order_stats(canary, stable, ranks)  # type: ignore[arg-type]
    critical = KAYENTA_TOLERANCE * abs(float(estimate))
    if lower > critical:
        return "High"
    if upper < -critical:
        return "Low"
    return "Pass"


# -- the peers: per-request samples, one trial at a time ----------------------------------


def _latencies(
    rng: np.random.Generator, n: int, sigma: float = SIGMA, scale: float = 1.0
) -> FloatArray:
    return rng.lognormal(math.log(MEDIAN_MS), sigma, n) * scale


def _errors(rng: np.random.Generator, n: int, rate: float, burst: int) -> BoolArray:
    """Which of ``n`` requests fail: each burst of ``burst`` requests fails together."""
    failed = np.repeat(rng.random(n // burst) < rate, burst)
    return np.concatenate([failed, np.zeros(n - failed.size, dtype=bool)])


def run_peer_trial(
    scenario: Scenario, traffic: str, index: int, trial: int, cfg: Config
) -> dict[str, int | None]:
    """The look at which the alias alarm and Kayenta roll the release back (None: promoted)."""
    rng = np.random.default_rng([cfg.seed, index, list(TRAFFIC).index(traffic), 1, trial])
    requests = cfg.traffic[traffic]
    pre = _latencies(rng, PRE_INTERVALS * requests)
    pre_errors = rng.random(pre.size) < BASE_ERROR
    alias_p99 = ALIAS_P99_FACTOR * float(np.quantile(pre, 0.99))
    alias_error = float(pre_errors.mean()) + ALIAS_ERROR_PP / 100
    rolled: dict[str, int | None] = {"alias_alarm": None, "kayenta": None}
    streak = dict.fromkeys(rolled, 0)
    nc, ns = cfg.canary_per_look(traffic, 60), cfg.stable_per_look(traffic, 60)
    for look in range(1, scenario.hold(cfg) + 1):
        c_scale, s_scale, c_rate, s_rate = _conditions(scenario, look - 1)
        c_lat = _latencies(rng, nc, scenario.canary_sigma, c_scale)
        s_lat = _latencies(rng, ns, SIGMA, s_scale)
        c_err = _errors(rng, nc, c_rate, scenario.burst)
        s_err = _errors(rng, ns, s_rate, scenario.burst)

        if rolled["alias_alarm"] is None:
            everyone = np.concatenate([c_lat, s_lat])
            error_rate = (int(c_err.sum()) + int(s_err.sum())) / everyone.size
            breach = float(np.quantile(everyone, 0.99)) > alias_p99 or error_rate > alias_error
            streak["alias_alarm"] = streak["alias_alarm"] + 1 if breach else 0
            if streak["alias_alarm"] >= PEER_FAILURE_LIMIT:
                rolled["alias_alarm"] = look

        if rolled["kayenta"] is None:
            if cfg.kayenta_errors == "series":
                c_series = np.array([a.mean() for a in np.array_split(c_err, SLICES)])
                # Kayenta's baseline is a cluster the canary's size: the ratio series
                # of groups of different sizes differ in shape even at equal rates.
                baseline = s_err[: c_err.size]
                s_series = np.array([a.mean() for a in np.array_split(baseline, SLICES)])
                error_class = kayenta_classify(c_series, s_series)
            else:
                error_class = kayenta_classify(c_err, s_err)
            classes = (kayenta_classify(c_lat, s_lat), error_class)
            failed = any(c in ("High", "Low") for c in classes)
            streak["kayenta"] = streak["kayenta"] + 1 if failed else 0
            if streak["kayenta"] >= PEER_FAILURE_LIMIT:
                rolled["kayenta"] = look

        if all(v is not None for v in rolled.values()):
            break
    return rolled


# -- running everything --------------------------------------------------------------------

Job = tuple[str, int, str, int, int, Config]
"""(kind 'coalmine' or 'peers', scenario index, traffic, first trial, last trial, config)"""


def _run_job(job: Job) -> tuple[Job, Any]:
    kind, index, traffic, lo, hi, cfg = job
    scenario = scenarios(cfg)[index]
    if kind == "coalmine":
        return job, run_coalmine(scenario, traffic, index, cfg)
    return job, [run_peer_trial(scenario, traffic, index, t, cfg) for t in range(lo, hi)]


def _jobs(cfg: Config) -> list[Job]:
    """Every job, the longest first (coalmine's innocent runs at low traffic wait for their
    evidence for hours), so that the workers finish together."""
    jobs: list[Job] = []
    size = max(1, math.ceil(cfg.peer_trials / 4))
    for index, _ in enumerate(scenarios(cfg)):
        for traffic in cfg.traffic:
            jobs.append(("coalmine", index, traffic, 0, cfg.trials, cfg))
            for lo in range(0, cfg.peer_trials, size):
                jobs.append(("peers", index, traffic, lo, min(cfg.peer_trials, lo + size), cfg))
    every = scenarios(cfg)

    def cost(job: Job) -> tuple[bool, bool, bool]:
        kind, index, traffic, *_ = job
        return (kind == "coalmine", not every[index].regression, traffic == "low")

    return sorted(jobs, key=cost, reverse=True)


# -- report ------------------------------------------------------------------------------


def _binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space over the shorter tail."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0:
        return 1.0
    if p >= 1:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)

    def pmf(i: int) -> float:
        return math.exp(
            math.lgamma(n + 1)
            - math.lgamma(i + 1)
            - math.lgamma(n - i + 1)
            + i * log_p
            + (n - i) * log_q
        )

    if k < n / 2:
        return min(1.0, math.fsum(pmf(i) for i in range(k + 1)))
    return max(0.0, 1 - math.fsum(pmf(i) for i in range(k + 1, n + 1)))


def _solve(f: Any, lo: float, hi: float) -> float:
    """The root of a monotone ``f`` (negative at ``lo``) in [lo, hi], by bisection."""
    for _ in range(60):
        mid = (lo + hi) / 2
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def interval(hits: int, n: int) -> list[float]:
    """[rate, low, high]: the share and its 95% Clopper-Pearson interval (exact binomial)."""
    if n <= 0:
        return [0.0, 0.0, 1.0]
    rate = hits / n
    low = 0.0
    if hits:
        low = _solve(lambda p: (1 - _binomial_cdf(hits - 1, n, p)) - 0.025, 0.0, rate)
    high = 1.0
    if hits < n:
        high = _solve(lambda p: 0.025 - _binomial_cdf(hits, n, p), rate, 1.0)
    return [round(rate, 5), round(low, 5), round(high, 5)]


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


@dataclass
class Outcomes:
    """One judge's trials of one scenario at one traffic level."""

    trials: int = 0
    rolled_back: list[tuple[float, int]] = field(default_factory=list)
    """each rollback's minute and the canary requests served by then"""
    promoted: list[float] = field(default_factory=list)
    """each promotion's minute"""
    paused: int = 0
    """trials that paused at least once (coalmine)"""


def collect(cfg: Config, done: Sequence[tuple[Job, Any]]) -> dict[str, dict[str, Outcomes]]:
    """Outcomes by judge, then by ``<scenario>@<traffic>``."""
    out: dict[str, dict[str, Outcomes]] = {j: {} for j in JUDGES}
    all_scenarios = scenarios(cfg)
    for (kind, index, traffic, _lo, _hi, _cfg), result in done:
        scenario = all_scenarios[index]
        key = f"{scenario.name}@{traffic}"
        if kind == "coalmine":
            o = out["coalmine"].setdefault(key, Outcomes())
            per_look = cfg.canary_per_look(traffic, cfg.look_seconds)
            o.trials += len(result.ended)
            o.rolled_back += [
                (look * cfg.look_seconds / 60, look * per_look)
                for look in result.look[result.ended == ROLLED_BACK].tolist()
            ]
            o.promoted += [
                look * cfg.look_seconds / 60
                for look in result.look[result.ended == PROMOTED].tolist()
            ]
            o.paused += int(((result.evidence_pauses + result.inconclusive_pauses) > 0).sum())
            continue
        per_minute = cfg.canary_per_look(traffic, 60)
        for peer in ("alias_alarm", "kayenta"):
            o = out[peer].setdefault(key, Outcomes())
            for rolled in result:
                o.trials += 1
                minute = rolled[peer]
                if minute is None:
                    o.promoted.append(float(scenario.hold(cfg)))
                else:
                    o.rolled_back.append((float(minute), minute * per_minute))
    return out


def summarise(cfg: Config, outcomes: dict[str, dict[str, Outcomes]]) -> dict[str, Any]:
    detection: dict[str, dict[str, float]] = {j: {} for j in JUDGES}
    detection_ci: dict[str, dict[str, list[float]]] = {j: {} for j in JUDGES}
    requests: dict[str, dict[str, float | None]] = {j: {} for j in JUDGES}
    minutes: dict[str, dict[str, float | None]] = {j: {} for j in JUDGES}
    promoted: dict[str, dict[str, float]] = {j: {} for j in JUDGES}
    promoted_ci: dict[str, dict[str, list[float]]] = {j: {} for j in JUDGES}
    innocent: dict[str, dict[str, float]] = {j: {} for j in JUDGES}
    innocent_ci: dict[str, dict[str, list[float]]] = {j: {} for j in JUDGES}
    within_step: dict[str, list[float]] = {}
    to_promotion: dict[str, float | None] = {}
    paused: dict[str, float] = {}
    worst_15: dict[str, dict[str, list[float]]] = {j: {} for j in JUDGES}
    worst_innocent: dict[str, list[float]] = {}
    for scenario in scenarios(cfg):
        for traffic in cfg.traffic:
            key = f"{scenario.name}@{traffic}"
            for j in JUDGES:
                o = outcomes[j][key]
                if scenario.regression:
                    ci = interval(len(o.rolled_back), o.trials)
                    detection[j][key], detection_ci[j][key] = ci[0], ci
                    requests[j][key] = _median([n for _, n in o.rolled_back])
                    minutes[j][key] = _median([t for t, _ in o.rolled_back])
                    ci = interval(len(o.promoted), o.trials)
                    promoted[j][key], promoted_ci[j][key] = ci[0], ci
                    if scenario.group == "1.5x":
                        best = worst_15[j].get(traffic)
                        if best is None or (ci[0], ci[2]) > (best[0], best[2]):
                            worst_15[j][traffic] = ci
                    if j == "coalmine":
                        early = sum(t <= cfg.hold for t, _ in o.rolled_back)
                        within_step[key] = interval(early, o.trials)
                else:
                    ci = interval(len(o.rolled_back), o.trials)
                    innocent[j][key], innocent_ci[j][key] = ci[0], ci
                    best = worst_innocent.get(j)
                    worse = best is None or (ci[0], ci[2]) > (best[0], best[2])
                    if scenario.group == "innocent" and worse:
                        worst_innocent[j] = ci
                    if j == "coalmine":
                        to_promotion[key] = _median(o.promoted)
            mine = outcomes["coalmine"][key]
            paused[key] = round(mine.paused / mine.trials, 5)
    return {
        "bench": "detection",
        "trials": cfg.trials,
        "detection_rate": detection,
        "median_canary_requests": requests,
        "false_rollback_rate": {j: innocent[j]["aa@default"] for j in JUDGES},
        "innocent_rollback_rate": innocent,
        "median_minutes_to_rollback": minutes,
        "coalmine_pause_rate": paused,
        "canary_requests_per_release": cfg.hold * cfg.canary_per_look("default", 60),
        "look_seconds": cfg.look_seconds,
        "kayenta_errors": cfg.kayenta_errors,
        "innocent_trials": cfg.innocent_trials,
        "peer_trials": cfg.peer_trials,
        "promoted_bad_rate": promoted,
        "promoted_bad_1_5x_limits": worst_15,
        "false_rollback_ci": worst_innocent,
        "detection_ci": detection_ci,
        "promoted_bad_ci": promoted_ci,
        "innocent_rollback_ci": innocent_ci,
        "coalmine_caught_within_first_step": within_step,
        "coalmine_median_minutes_to_promotion": to_promotion,
    }


def goals(cfg: Config, out: dict[str, Any]) -> list[tuple[str, bool]]:
    checks: list[tuple[str, bool]] = []
    for traffic, ci in out["promoted_bad_1_5x_limits"]["coalmine"].items():
        checks.append(
            (
                f"at 1.5x the limits never promoted at {traffic} traffic (worst scenario"
                f" {ci[0]:.2%}, upper bound {ci[2]:.2%} < 1%)",
                ci[2] < 0.01,
            )
        )
    within = out["coalmine_caught_within_first_step"]
    for scenario in scenarios(cfg):
        if scenario.group in ("today", "1.5x"):
            ci = within[f"{scenario.name}@default"]
            checks.append(
                (
                    f"{scenario.name} caught within the first step ({cfg.hold} min) at"
                    f" default traffic in >= 99% of trials ({ci[0]:.1%}, {ci[1]:.1%}-{ci[2]:.1%})",
                    ci[0] >= 0.99,
                )
            )
    long_runs = [
        ci
        for key, ci in out["innocent_rollback_ci"]["coalmine"].items()
        if key.split("@")[0].endswith("_200")
    ]
    worst = max(long_runs, key=lambda ci: (ci[0], ci[2]))
    checks.append(
        (
            f"false rollbacks over 200 looks: worst {worst[0]:.2%}, upper bound"
            f" {worst[2]:.2%} < 1%",
            worst[2] < 0.01,
        )
    )
    for name, before in TODAY.items():
        got = out["median_canary_requests"]["coalmine"].get(f"{name}@default")
        checks.append(
            (
                f"{name}: median canary requests to detect {got or '-'} < today's {before:,}",
                got is not None and got < before,
            )
        )
    return checks


def _pct(ci: Sequence[float]) -> str:
    return f"{ci[0]:.1%} [{ci[1]:.1%}, {ci[2]:.1%}]"


def _n(value: float | None) -> str:
    return f"{value:,.0f}" if value is not None else "-"


def print_table(cfg: Config, out: dict[str, Any], elapsed: float) -> None:
    print(
        f"coalmine: {cfg.trials:,} trials per regression, {cfg.innocent_trials:,} per innocent"
        f" run; the peers: {cfg.peer_trials} per scenario;"
        f" {cfg.canary_share:.0%} canary; traffic "
        + ", ".join(f"{t} {r:,} requests a minute" for t, r in cfg.traffic.items())
        + f"; coalmine looks every {cfg.look_seconds:g} s, the peers every minute; a step held"
        f" {cfg.hold} min ({cfg.long_hold} min for the _200 innocent runs: {cfg.looks(cfg.long_hold)}"
        " looks); 95% Clopper-Pearson intervals"
    )
    for traffic in cfg.traffic:
        print()
        print(
            f"regressions at {traffic} traffic: caught; bad canary promoted; median canary"
            " requests (minutes) to rollback"
        )
        lines = [
            [
                "scenario",
                *(f"{j} caught" for j in JUDGES),
                *(f"{j} promoted" for j in JUDGES),
                "coalmine to rollback",
            ]
        ]
        for scenario in scenarios(cfg):
            if not scenario.regression:
                continue
            key = f"{scenario.name}@{traffic}"
            n = out["median_canary_requests"]["coalmine"][key]
            t = out["median_minutes_to_rollback"]["coalmine"][key]
            lines.append(
                [
                    scenario.name,
                    *(_pct(out["detection_ci"][j][key]) for j in JUDGES),
                    *(_pct(out["promoted_bad_ci"][j][key]) for j in JUDGES),
                    f"{_n(n)} ({t:g} min)" if n is not None and t is not None else "-",
                ]
            )
        print_aligned(lines)
        print()
        print(
            f"innocent canaries at {traffic} traffic: rolled back (false rollbacks); coalmine's"
            " median minutes to promotion, share paused at least once"
        )
        lines = [["scenario", *JUDGES, "coalmine promoted at", "paused"]]
        for scenario in scenarios(cfg):
            if scenario.regression:
                continue
            key = f"{scenario.name}@{traffic}"
            lines.append(
                [
                    scenario.name,
                    *(_pct(out["innocent_rollback_ci"][j][key]) for j in JUDGES),
                    f"{_n(out['coalmine_median_minutes_to_promotion'][key])} min",
                    f"{out['coalmine_pause_rate'][key]:.1%}",
                ]
            )
        print_aligned(lines)
    print()
    print("aa_sticky is beyond the issue's innocent runs and not in the goals (see docs/judge.md)")
    print()
    for text, ok in goals(cfg, out):
        print(f"goal: {text}: {'PASS' if ok else 'MISS'}")
    print(f"elapsed {elapsed:.1f} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else "")
    parser.add_argument("--trials", type=int, default=1000, help="coalmine's trials per regression")
    parser.add_argument(
        "--innocent-trials",
        type=int,
        default=None,
        help="coalmine's trials per innocent run (default: twice --trials)",
    )
    parser.add_argument(
        "--peer-trials", type=int, default=100, help="the alias alarm's and Kayenta's"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--hold", type=int, default=20, help="minutes a step is held")
    parser.add_argument(
        "--long-hold", type=int, default=200, help="minutes for the _200 innocent runs"
    )
    parser.add_argument(
        "--give-up",
        type=int,
        default=300,
        help="minutes after the hold before a trial is undecided",
    )
    parser.add_argument(
        "--interval-requests",
        type=int,
        default=TRAFFIC["default"],
        help="default traffic, a minute",
    )
    parser.add_argument(
        "--low-requests", type=int, default=TRAFFIC["low"], help="low traffic, a minute"
    )
    parser.add_argument("--canary-share", type=float, default=0.1)
    parser.add_argument("--latency-multiplier", type=float, default=1.5)
    parser.add_argument("--extra-error-pp", type=float, default=2.0)
    parser.add_argument("--tail-multiplier", type=float, default=1.5)
    parser.add_argument(
        "--kayenta-errors",
        choices=("requests", "series"),
        default="requests",
        help="Kayenta's error metric: per-request 0/1 samples, or the error ratio of"
        " each tenth of an interval (a metrics-store time series)",
    )
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    if (
        args.trials < 1
        or (args.innocent_trials is not None and args.innocent_trials < 1)
        or args.peer_trials < 1
        or args.hold < 1
        or args.long_hold < 1
        or args.give_up < 0
        or not 0 < args.canary_share < 1
    ):
        parser.error(
            "--trials, --peer-trials, --hold and --long-hold must be >= 1, --give-up >= 0,"
            " --canary-share in (0, 1)"
        )
    cfg = Config(
        trials=args.trials,
        innocent_trials=args.innocent_trials or 2 * args.trials,
        peer_trials=args.peer_trials,
        hold=args.hold,
        long_hold=args.long_hold,
        give_up=args.give_up,
        canary_share=args.canary_share,
        latency_multiplier=args.latency_multiplier,
        extra_error_pp=args.extra_error_pp,
        tail_multiplier=args.tail_multiplier,
        seed=args.seed,
        kayenta_errors=args.kayenta_errors,
        traffic={"default": args.interval_requests, "low": args.low_requests},
    )
    started = time.perf_counter()
    jobs = _jobs(cfg)
    if args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            done = list(pool.map(_run_job, jobs))
    else:
        done = [_run_job(job) for job in jobs]
    out = summarise(cfg, collect(cfg, done))
    out["goals"] = [{"goal": text, "met": ok} for text, ok in goals(cfg, out)]
    elapsed = time.perf_counter() - started
    if not args.json_only:
        print_table(cfg, out, elapsed)
    print(json.dumps(out))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
