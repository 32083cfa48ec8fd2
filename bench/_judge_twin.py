"""coalmine's judge on simulated sufficient statistics, for a whole batch of trials at once.

`bench/detection.py` simulates thousands of releases of up to hundreds of looks
each; `coalmine.core.judge.judge` on real histograms costs about half a
millisecond a look, too slow for that. `JudgeTwin` makes the same decisions
from the same statistics for a batch of trials with numpy: each channel's
cumulative latency histogram on the judge's bucket grid (a window of buckets
around the quantiles; the few values outside it fold into one bucket below
and one above, which no judged quantile or threshold reaches), request and
error counts, and per metric the sequential test (`coalmine.core.stats.RateTest`:
the mixture likelihood ratio on the grid, its running maximum, the
overdispersion estimate), the exceedance thresholds of
`coalmine.core.sequential`, the evidence needed
(`coalmine.core.stats.evidence_needed`), the outcome with the effect floor,
the verdict and whether it is only waiting for traffic. The release around it
(the tracker, the evidence gate, pauses) is bench/detection.py's.

It reads the judge's constants from coalmine.core, and
tests/bench/test_detection_bench.py checks it against the real judge, look by
look, on histograms built from its own counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray

from coalmine.core.analysis import AnalysisSettings
from coalmine.core.histogram import LatencyHistogram
from coalmine.core.judge import EFFECT_FLOOR
from coalmine.core.stats import GRID_LOG_RATIOS, GRID_LOG_WEIGHTS

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

PASS, INCONCLUSIVE, FAIL = 0, 1, 2

_LAYOUT = LatencyHistogram()
LOG_GAMMA = math.log((1 + _LAYOUT.alpha) / (1 - _LAYOUT.alpha))
GAMMA = math.exp(LOG_GAMMA)
LOW_MS, HIGH_MS = 40.0, 3000.0
B_LO = math.ceil(math.log(LOW_MS) / LOG_GAMMA)
"""the lowest bucket of the window; values below fold into bucket ``B_LO - 1``"""
B_HI = math.ceil(math.log(HIGH_MS) / LOG_GAMMA)
"""the highest bucket of the window; values above fold into bucket ``B_HI + 1``"""
POSITIONS = B_HI - B_LO + 3
"""array positions: 0 is bucket ``B_LO - 1``, ``POSITIONS - 1`` is bucket ``B_HI + 1``"""
INDEX = np.arange(B_LO - 1, B_HI + 2, dtype=np.int64)
"""the bucket index of each position"""
REPRESENTATIVE = 2 * np.exp(INDEX * LOG_GAMMA) / (GAMMA + 1)

_U = np.asarray(GRID_LOG_RATIOS, dtype=np.float64)
_LOG_W = np.asarray(GRID_LOG_WEIGHTS, dtype=np.float64)
_EXPM1_U = np.expm1(_U)
_THETA = np.exp(_U)
_PRIOR_LOOKS = 10.0  # coalmine.core.stats._PRIOR_LOOKS
_MIN_SPREAD = 2.0  # coalmine.core.stats._MIN_SPREAD


def bucket_probabilities(median_ms: float, sigma: float) -> FloatArray:
    """P(a lognormal latency falls in each position's bucket): ``(gamma^(b-1), gamma^b]``."""
    mu = math.log(median_ms)
    cdf = np.vectorize(NormalDist().cdf)
    upper = cdf((INDEX * LOG_GAMMA - mu) / sigma)
    lower = cdf(((INDEX - 1) * LOG_GAMMA - mu) / sigma)
    p = np.asarray(upper - lower, dtype=np.float64)
    p[0] = upper[0]  # everything at or below the window
    p[-1] = 1 - lower[-1]  # everything above it
    p = np.clip(p, 0.0, None)
    return np.asarray(p / p.sum(), dtype=np.float64)


def _logsumexp(x: FloatArray) -> FloatArray:
    top = x.max(axis=1)
    return np.asarray(top + np.log(np.exp(x - top[:, None]).sum(axis=1)), dtype=np.float64)


def quantile_position(cum: IntArray, q: float) -> IntArray:
    """Per trial, the position of the bucket holding the q-quantile (rank floor(q (n-1))),
    from the histograms' cumulative sums along the buckets."""
    rank = np.floor(q * (cum[:, -1] - 1))
    return np.asarray(np.argmax(cum > rank[:, None], axis=1), dtype=np.int64)


def count_above(cum: IntArray, position: IntArray) -> IntArray:
    """Per trial, the values in buckets above ``position`` (from cumulative sums)."""
    above = cum[:, -1] - np.take_along_axis(cum, position[:, None], axis=1)[:, 0]
    return np.asarray(above, dtype=np.int64)


def _position_of(value_ms: FloatArray) -> IntArray:
    """The position of the bucket ``LatencyHistogram.index_of`` gives a value (clamped)."""
    index = np.ceil(np.log(value_ms) / LOG_GAMMA).astype(np.int64)
    return np.asarray(np.clip(index - (B_LO - 1), 0, POSITIONS - 1), dtype=np.int64)


def evidence_needed(
    stable_rate: FloatArray,
    canary_rate: FloatArray,
    share: FloatArray,
    alpha: float,
    power: float,
    phi: FloatArray,
) -> FloatArray:
    """`coalmine.core.stats.evidence_needed` for many trials (inf where it gives None)."""
    z = NormalDist().inv_cdf(power)
    ok = (stable_rate >= 0) & (stable_rate < canary_rate) & (canary_rate <= 1) & (share > 0)
    share = np.where(ok, share, 0.5)
    per = ((1 - share) / share)[:, None]
    b = np.log1p(share[:, None] * (_THETA[None, :] - 1))
    a_canary = _U[None, :] - b
    ph = phi[:, None]
    mean = (canary_rate[:, None] * a_canary - per * stable_rate[:, None] * b) / ph
    var = (canary_rate[:, None] * a_canary**2 + per * stable_rate[:, None] * b**2) / ph**2
    target = math.log(1 / alpha) - _LOG_W[None, :]
    good = mean > 0
    safe_mean = np.where(good, mean, 1.0)
    root = (z * np.sqrt(var) + np.sqrt(z * z * var + 4 * safe_mean * target)) / (2 * safe_mean)
    n = np.where(good, root * root, np.inf).min(axis=1)
    return np.asarray(np.where(ok, n, np.inf), dtype=np.float64)


@dataclass
class RateTestTwin:
    """`coalmine.core.stats.RateTest` for a batch of trials."""

    trials: int
    llr: FloatArray = field(init=False)
    looks: IntArray = field(init=False)
    residuals: FloatArray = field(init=False)
    residual_looks: IntArray = field(init=False)
    totals: IntArray = field(init=False)
    """canary events, canary trials, stable events, stable trials"""
    batch: FloatArray = field(init=False)
    """the batch of looks being filled: canary events, expectation, binomial variance"""

    def __post_init__(self) -> None:
        t = self.trials
        self.llr = np.zeros((t, _U.size))
        self.looks = np.zeros(t, dtype=np.int64)
        self.residuals = np.zeros(t)
        self.residual_looks = np.zeros(t, dtype=np.int64)
        self.totals = np.zeros((t, 4), dtype=np.int64)
        self.batch = np.zeros((t, 3))

    def take(self, keep: BoolArray) -> None:
        for name in ("llr", "looks", "residuals", "residual_looks", "totals", "batch"):
            setattr(self, name, getattr(self, name)[keep])
        self.trials = int(keep.sum())

    @property
    def phi(self) -> FloatArray:
        phi = np.maximum(
            1.0, (_PRIOR_LOOKS + self.residuals) / (_PRIOR_LOOKS + self.residual_looks)
        )
        return np.asarray(phi, dtype=np.float64)

    @property
    def p_value(self) -> FloatArray:
        log_e = _logsumexp(self.llr + _LOG_W[None, :])
        return np.asarray(np.minimum(1.0, np.exp(-log_e)), dtype=np.float64)

    def observe(self, x: IntArray, n: IntArray, y: IntArray, m: IntArray) -> None:
        k = x + y
        info = (k > 0) & (n > 0) & (m > 0)
        rho = np.where(info, n / np.maximum(n + m, 1), 0.0)
        phi = self.phi
        step = x[:, None] * _U[None, :] - k[:, None] * np.log1p(rho[:, None] * _EXPM1_U[None, :])
        self.llr += np.where(info[:, None], step / phi[:, None], 0.0)
        tot = self.totals
        theta = ((tot[:, 0] + 0.5) / (tot[:, 1] + 1)) / ((tot[:, 2] + 0.5) / (tot[:, 3] + 1))
        pi = rho * theta / (rho * theta + 1 - rho)
        use = (info & (self.looks > 0))[:, None]
        self.batch += np.where(use, np.stack([x, k * pi, k * pi * (1 - pi)], axis=1), 0.0)
        full = self.batch[:, 2] >= _MIN_SPREAD
        safe = np.where(full, self.batch[:, 2], 1.0)
        self.residuals += np.where(full, (self.batch[:, 0] - self.batch[:, 1]) ** 2 / safe, 0.0)
        self.residual_looks += full
        self.batch[full] = 0.0
        self.looks += info
        self.totals += np.stack([x, n, y, m], axis=1)


@dataclass
class Look:
    """One look's verdict for each trial of the batch."""

    outcome: IntArray
    waiting: BoolArray
    enough: BoolArray | None
    """None when the evidence was not asked for"""
    needed: list[FloatArray] | None
    """per metric (error rate first), the evidence it needs (inf: unknown)"""
    failing: list[str]
    """per trial, the failing metrics (empty strings joined)"""


class JudgeTwin:
    """The judge with the default metrics (error rate, p50, p95, p99) for a batch of trials."""

    def __init__(self, trials: int, settings: AnalysisSettings | None = None) -> None:
        self.settings = settings if settings is not None else AnalysisSettings()
        s = self.settings
        if s.error_rate is None or s.custom:
            raise ValueError("the twin judges the error rate and latency quantiles only")
        self.trials = trials
        self.canary_hist = np.zeros((trials, POSITIONS), dtype=np.int64)
        self.stable_hist = np.zeros((trials, POSITIONS), dtype=np.int64)
        self.counts = np.zeros((trials, 4), dtype=np.int64)
        """canary errors, canary requests, stable errors, stable requests (cumulative)"""
        tests = 1 + len(s.latency)
        self.alpha_errors = (1 - s.error_rate.confidence) / tests
        self.alpha_latency = [(1 - c.confidence) / tests for c in s.latency]
        self.errors = RateTestTwin(trials)
        self.latency = [RateTestTwin(trials) for _ in s.latency]
        self.threshold = [np.zeros(trials, dtype=np.int64) for _ in s.latency]
        self.seen = [np.zeros((trials, 4), dtype=np.int64) for _ in s.latency]
        self._canary_cum = np.zeros((trials, POSITIONS), dtype=np.int64)
        self._stable_cum = np.zeros((trials, POSITIONS), dtype=np.int64)
        self.looks = 0

    def take(self, keep: BoolArray) -> None:
        """Keep only the trials where ``keep`` is true (the others ended)."""
        self.canary_hist = self.canary_hist[keep]
        self.stable_hist = self.stable_hist[keep]
        self._canary_cum = self._canary_cum[keep]
        self._stable_cum = self._stable_cum[keep]
        self.counts = self.counts[keep]
        self.errors.take(keep)
        for i, test in enumerate(self.latency):
            test.take(keep)
            self.threshold[i] = self.threshold[i][keep]
            self.seen[i] = self.seen[i][keep]
        self.trials = int(keep.sum())

    def _needed_errors(self, share: FloatArray) -> FloatArray:
        s = self.settings
        assert s.error_rate is not None
        c = self.counts
        rs = (c[:, 2] + 0.5) / (c[:, 3] + 1)
        rc = np.minimum(1.0, rs + s.error_rate.max_increase_pp / 100)
        n = evidence_needed(rs, rc, share, self.alpha_errors, s.power, self.errors.phi)
        return np.where(np.isfinite(n), np.maximum(s.min_requests, np.ceil(n)), np.inf)

    def _needed_latency(self, i: int, share: FloatArray) -> FloatArray:
        s = self.settings
        check = s.latency[i]
        stable = self._stable_cum
        count = stable[:, -1]
        pos = quantile_position(stable, check.quantile)
        rs = count_above(stable, pos) / count
        top = np.exp(INDEX[pos] * LOG_GAMMA)
        limit_pos = _position_of(top / (1 + check.max_increase_pct / 100))
        rc = count_above(stable, limit_pos) / count
        n = evidence_needed(rs, rc, share, self.alpha_latency[i], s.power, self.latency[i].phi)
        return np.where(np.isfinite(n), np.maximum(s.min_requests, np.ceil(n)), np.inf)

    def look(
        self,
        canary_hist: IntArray,
        stable_hist: IntArray,
        canary_errors: IntArray,
        stable_errors: IntArray,
        *,
        evidence: bool,
    ) -> Look:
        """Fold in one interval (every request has a latency) and judge; with ``evidence``,
        also say whether every metric has the evidence a step waits for."""
        s = self.settings
        assert s.error_rate is not None
        n = canary_hist.sum(axis=1)
        m = stable_hist.sum(axis=1)
        self.canary_hist += canary_hist
        self.stable_hist += stable_hist
        self.counts += np.stack([canary_errors, n, stable_errors, m], axis=1)
        self.errors.observe(canary_errors, n, stable_errors, m)
        first = self.looks == 0
        c_cum = np.cumsum(self.canary_hist, axis=1)
        s_cum = np.cumsum(self.stable_hist, axis=1)
        self._canary_cum, self._stable_cum = c_cum, s_cum
        pooled = c_cum + s_cum if first else None
        for i, check in enumerate(s.latency):
            if pooled is not None:
                t = quantile_position(pooled, check.quantile)
                now = np.stack(
                    [count_above(c_cum, t), c_cum[:, -1], count_above(s_cum, t), s_cum[:, -1]],
                    axis=1,
                )
                inc = now
            else:
                t = self.threshold[i]
                now = np.stack(
                    [count_above(c_cum, t), c_cum[:, -1], count_above(s_cum, t), s_cum[:, -1]],
                    axis=1,
                )
                inc = np.maximum(now - self.seen[i], 0)
                inc[:, 0] = np.minimum(inc[:, 0], inc[:, 1])
                inc[:, 2] = np.minimum(inc[:, 2], inc[:, 3])
            self.latency[i].observe(inc[:, 0], inc[:, 1], inc[:, 2], inc[:, 3])
            t_next = quantile_position(s_cum, check.quantile)
            self.threshold[i] = t_next
            self.seen[i] = np.stack(
                [
                    count_above(c_cum, t_next),
                    c_cum[:, -1],
                    count_above(s_cum, t_next),
                    s_cum[:, -1],
                ],
                axis=1,
            )
        self.looks += 1
        return self._verdict(n, m, evidence=evidence)

    def _verdict(self, n: IntArray, m: IntArray, *, evidence: bool) -> Look:
        s = self.settings
        assert s.error_rate is not None
        c = self.counts
        short = (c[:, 1] < s.min_requests) | (c[:, 3] < s.min_requests)
        outcomes = []
        names = ["error_rate"]
        rc = c[:, 0] / np.maximum(c[:, 1], 1)
        rs = c[:, 2] / np.maximum(c[:, 3], 1)
        diff = (rc - rs) * 100
        limit = s.error_rate.max_increase_pp
        fail = (self.errors.p_value < self.alpha_errors) & (diff > EFFECT_FLOOR * limit)
        outcomes.append(np.where(fail, FAIL, np.where(diff <= limit, PASS, INCONCLUSIVE)))
        for i, check in enumerate(s.latency):
            names.append(check.name)
            cq = REPRESENTATIVE[quantile_position(self._canary_cum, check.quantile)]
            sq = REPRESENTATIVE[quantile_position(self._stable_cum, check.quantile)]
            change = (cq / sq - 1) * 100
            limit = check.max_increase_pct
            p = self.latency[i].p_value
            fail = (p < self.alpha_latency[i]) & (change > EFFECT_FLOOR * limit)
            outcomes.append(np.where(fail, FAIL, np.where(change <= limit, PASS, INCONCLUSIVE)))
        per = np.stack(outcomes, axis=1)
        per = np.where(short[:, None], INCONCLUSIVE, per)
        outcome = per.max(axis=1)
        waiting = (outcome == INCONCLUSIVE) & short
        failing = (
            [",".join(name for name, o in zip(names, row, strict=True) if o == FAIL) for row in per]
            if (outcome == FAIL).any()
            else [""] * len(outcome)
        )
        enough = None
        needed: list[FloatArray] | None = None
        if evidence:
            share = np.where(
                (n > 0) & (m > 0),
                n / np.maximum(n + m, 1),
                c[:, 1] / np.maximum(c[:, 1] + c[:, 3], 1),
            )
            needed = [self._needed_errors(share)]
            needed += [self._needed_latency(i, share) for i in range(len(s.latency))]
            have = c[:, 1]
            enough = np.ones(len(outcome), dtype=bool)
            for need in needed:
                enough &= have >= need
        return Look(outcome.astype(np.int64), waiting, enough, needed, failing)
