"""The judge's statistics: an anytime-valid test of two rates, and the evidence it needs.

Every metric the judge tests is a rate compared between the channels: the
error rate (errors per request) and, for a latency quantile, the share of
requests slower than a threshold (*exceedances*). `RateTest` is one
metric's sequential test, fed one look's *increment* at a time (what each
channel served since the previous look), and `evidence_needed` is how much
canary traffic the test needs to catch a regression at a given size.

The test. Within one look's increment, condition on the number of events
``k`` (errors, or exceedances) both channels had together. If the canary is
no worse than stable, each of those events is the canary's with probability
at most its share of the trials, ``rho = n / (n + m)``: the canary's count
is hypergeometric, no more spread out than ``Binomial(k, rho)``, whatever
the rate is in that look (a fault both channels share, an exposure that
changed between looks). A canary whose rate is ``theta`` times stable's
owns a share ``pi(theta) = rho theta / (rho theta + 1 - rho)``, and the log
likelihood ratio of the look is ``x log theta - k log(1 + rho (theta - 1))``.
The judge does not know ``theta``, so it mixes: the e-value is the
likelihood ratio averaged over a fixed grid of ratios from 1.05 to 10,000
(weights falling off as a Cauchy density in ``log theta``). Its product over
looks is a nonnegative supermartingale under the null, so by Ville's
inequality it ever reaches ``1 / alpha`` with probability at most ``alpha``,
however many looks there are and whenever one stops: a mixture sequential
probability ratio test (Robbins 1970; Johari et al. 2017) on the conditional
binomial of two Poisson processes (Lindon, Sanden and Shirikian 2022).
``min(1, 1 / e-value)`` is the look's p-value: the chance that it is ever at
most ``alpha`` at any look, for a canary no worse, is at most ``alpha``.

Correlated requests. Requests of one user go to one channel, and their
outcomes are correlated, so the canary's share of events varies more than
the binomial says. Pearson residuals of the canary's events around the
ratio estimated from the looks before each one (predictable, so the test
stays valid) estimate that overdispersion ``phi`` (shrunk towards 1 by 10
residuals' worth of prior, never below 1); each look's log likelihood ratio
is divided by it (a tempered likelihood: for a quasi-binomial count whose
variance is ``phi`` times the binomial's, the tempered ratio keeps its
expectation at most 1 to second order), and the evidence needed grows by the
same factor. Consecutive looks are pooled into one residual until their
binomial variance reaches 2 (``sum k pi (1 - pi) >= 2``), so sparse events
(a few errors a look) still measure the spread, and a handful of errors on a
canary whose stable has none is not taken for noise. Correlation is only
seen once it has shown in a few such batches: at the very start of a
release, the test treats requests as independent.

Pure functions and immutable values; only `math`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Any

from coalmine.core.errors import InvalidInput

__all__ = [
    "GRID_LOG_RATIOS",
    "GRID_LOG_WEIGHTS",
    "RateTest",
    "evidence_needed",
    "look_log_ratio",
]

_GRID = 40
_LOW_RATIO, _HIGH_RATIO = 1.05, 1e4
GRID_LOG_RATIOS: tuple[float, ...] = tuple(
    math.log(_LOW_RATIO) + i * (math.log(_HIGH_RATIO) - math.log(_LOW_RATIO)) / (_GRID - 1)
    for i in range(_GRID)
)
"""``log theta`` of the mixture's rate ratios, evenly spaced from log 1.05 to log 10,000."""
_RAW_WEIGHTS = [1 / (1 + u * u) for u in GRID_LOG_RATIOS]
GRID_LOG_WEIGHTS: tuple[float, ...] = tuple(math.log(w / sum(_RAW_WEIGHTS)) for w in _RAW_WEIGHTS)
"""The mixture's log weights (a Cauchy density in ``log theta``, normalised)."""
_RATIOS = tuple(math.exp(u) for u in GRID_LOG_RATIOS)
_PRIOR_LOOKS = 10.0
"""looks' worth of belief that requests are independent (``phi = 1``)"""
_MIN_SPREAD = 2.0
"""a look's binomial variance ``k pi (1 - pi)`` below which it says nothing about ``phi``"""


def _whole(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{what} must be a whole number >= 0, got {value!r}")
    return value


def _check_counts(events: int, trials: int, side: str) -> None:
    _whole(events, f"{side} events")
    _whole(trials, f"{side} trials")
    if events > trials:
        raise InvalidInput(f"{side} events ({events}) cannot exceed its trials ({trials})")


def _batch(value: object) -> tuple[float, float, float]:
    if not isinstance(value, list) or len(value) != 3:
        raise ValueError("batch needs 3 numbers")
    return (float(value[0]), float(value[1]), float(value[2]))


def _log_mean_exp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return top
    return top + math.log(math.fsum(math.exp(v - top) for v in values))


def look_log_ratio(log_ratio: float, x: int, k: int, rho: float) -> float:
    """One look's log likelihood ratio for rate ratio ``exp(log_ratio)``: ``x`` of ``k``
    events were the canary's, whose share of the trials is ``rho``."""
    return x * log_ratio - k * math.log1p(rho * math.expm1(log_ratio))


@dataclass(frozen=True, slots=True)
class RateTest:
    """One metric's anytime-valid test of "the canary's rate is no higher than stable's".

    Immutable: `observe` returns the test after one more look. ``log_lr`` is
    the tempered log likelihood ratio summed over looks at each grid ratio;
    the ``canary_*``/``stable_*`` counts are the sums of the increments seen.
    """

    log_lr: tuple[float, ...] = (0.0,) * _GRID
    looks: int = 0
    """looks that brought information (events on both sides' trials)"""
    residuals: float = 0.0
    """sum of squared Pearson residuals of the batches of looks that measured the spread"""
    residual_looks: int = 0
    """batches of looks in ``residuals``"""
    batch: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """the batch being filled: canary events, their expectation, their binomial variance"""
    canary_events: int = 0
    canary_trials: int = 0
    stable_events: int = 0
    stable_trials: int = 0

    @property
    def phi(self) -> float:
        """The overdispersion the looks so far show: 1 for independent requests."""
        return max(1.0, (_PRIOR_LOOKS + self.residuals) / (_PRIOR_LOOKS + self.residual_looks))

    @property
    def log_e(self) -> float:
        """The log e-value now: the mixture of the likelihood ratios."""
        return _log_mean_exp([lr + w for lr, w in zip(self.log_lr, GRID_LOG_WEIGHTS, strict=True)])

    @property
    def p_value(self) -> float:
        """``min(1, 1 / e-value)``: at most ``alpha`` at some look, however many, with
        probability at most ``alpha`` when the canary is no worse (Ville's inequality)."""
        return min(1.0, math.exp(-self.log_e))

    def ratio(self) -> float:
        """The canary's rate over stable's, from the counts so far (shrunk off 0 and inf)."""
        canary = (self.canary_events + 0.5) / (self.canary_trials + 1)
        stable = (self.stable_events + 0.5) / (self.stable_trials + 1)
        return canary / stable

    def observe(
        self, canary_events: int, canary_trials: int, stable_events: int, stable_trials: int
    ) -> RateTest:
        """The test after one look whose increment is the given counts."""
        _check_counts(canary_events, canary_trials, "canary")
        _check_counts(stable_events, stable_trials, "stable")
        totals = replace(
            self,
            canary_events=self.canary_events + canary_events,
            canary_trials=self.canary_trials + canary_trials,
            stable_events=self.stable_events + stable_events,
            stable_trials=self.stable_trials + stable_trials,
        )
        k = canary_events + stable_events
        if k == 0 or canary_trials == 0 or stable_trials == 0:
            return totals  # the likelihood ratio of such a look is 1 at every ratio
        rho = canary_trials / (canary_trials + stable_trials)
        x = canary_events
        phi = self.phi  # from the looks before this one: predictable
        log_lr = tuple(
            lr + look_log_ratio(u, x, k, rho) / phi
            for lr, u in zip(self.log_lr, GRID_LOG_RATIOS, strict=True)
        )
        residuals, residual_looks, batch = self.residuals, self.residual_looks, self.batch
        if self.looks:
            theta = self.ratio()
            pi = rho * theta / (rho * theta + 1 - rho)
            events, expected, spread = batch
            batch = (events + x, expected + k * pi, spread + k * pi * (1 - pi))
            if batch[2] >= _MIN_SPREAD:
                residuals += (batch[0] - batch[1]) ** 2 / batch[2]
                residual_looks += 1
                batch = (0.0, 0.0, 0.0)
        return replace(
            totals,
            log_lr=log_lr,
            looks=self.looks + 1,
            residuals=residuals,
            residual_looks=residual_looks,
            batch=batch,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "log_lr": list(self.log_lr),
            "looks": self.looks,
            "residuals": self.residuals,
            "residual_looks": self.residual_looks,
            "batch": list(self.batch),
            "canary": [self.canary_events, self.canary_trials],
            "stable": [self.stable_events, self.stable_trials],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RateTest:
        """Read a stored test back (validated: it comes from the store)."""
        if not isinstance(data, Mapping):
            raise InvalidInput("a rate test must be an object")
        try:
            log_lr = tuple(float(v) for v in data["log_lr"])
            canary, stable = data["canary"], data["stable"]
            out = cls(
                log_lr=log_lr,
                looks=_whole(data["looks"], "looks"),
                residuals=float(data["residuals"]),
                residual_looks=_whole(data["residual_looks"], "residual_looks"),
                batch=_batch(data["batch"]),
                canary_events=_whole(canary[0], "canary events"),
                canary_trials=_whole(canary[1], "canary trials"),
                stable_events=_whole(stable[0], "stable events"),
                stable_trials=_whole(stable[1], "stable trials"),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise InvalidInput(f"invalid rate test: {exc!r}") from None
        numbers = (*out.log_lr, out.residuals, *out.batch)
        if len(log_lr) != _GRID or not all(math.isfinite(v) for v in numbers):
            raise InvalidInput(f"invalid rate test: log_lr needs {_GRID} finite numbers")
        if out.residuals < 0 or min(out.batch) < 0:
            raise InvalidInput("invalid rate test: negative residuals or batch")
        _check_counts(out.canary_events, out.canary_trials, "canary")
        _check_counts(out.stable_events, out.stable_trials, "stable")
        return out


def evidence_needed(
    stable_rate: float,
    canary_rate: float,
    canary_share: float,
    alpha: float,
    power: float,
    phi: float = 1.0,
) -> float | None:
    """Canary trials the test needs to reach ``1 / alpha`` with probability ``power`` when
    the canary's rate is ``canary_rate`` and stable's ``stable_rate``, the canary having
    ``canary_share`` of the trials; None when it never would (the rates do not differ).

    The tempered log likelihood ratio at one grid ratio, summed over ``N``
    canary trials, is nearly normal with mean ``a N`` and variance ``v N``
    (Poisson counts; ``phi`` scales the mean down by ``phi`` and the standard
    deviation by ``phi``). The mixture's log e-value is at least that ratio
    plus the grid point's log weight, so ``N`` solves ``a N - z sqrt(v N) =
    log(1 / alpha) - log weight`` (``z`` the normal quantile of ``power``),
    minimised over the grid. It ignores that the test may cross earlier, so
    it errs on the safe side (the detection bench measures the power it gives).
    """
    if not 0 < canary_share < 1 or not 0 < alpha < 1 or not 0 < power < 1 or phi < 1:
        raise InvalidInput("evidence_needed: share, alpha and power in (0, 1), phi >= 1")
    if not 0 <= stable_rate < canary_rate <= 1:
        return None
    z = NormalDist().inv_cdf(power)
    per_canary = (1 - canary_share) / canary_share  # stable trials per canary trial
    base = math.log(1 / alpha)
    best: float | None = None
    for u, theta, log_w in zip(GRID_LOG_RATIOS, _RATIOS, GRID_LOG_WEIGHTS, strict=True):
        b = math.log1p(canary_share * (theta - 1))
        a_canary = u - b
        mean = (canary_rate * a_canary - per_canary * stable_rate * b) / phi
        if mean <= 0:
            continue
        var = (canary_rate * a_canary**2 + per_canary * stable_rate * b**2) / phi**2
        target = base - log_w
        root = (z * math.sqrt(var) + math.sqrt(z * z * var + 4 * mean * target)) / (2 * mean)
        n = root * root
        if best is None or n < best:
            best = n
    return best
