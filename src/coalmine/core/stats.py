"""The statistical tests the judge runs: Fisher's exact test and Mann-Whitney U.

`fisher_greater` is the one-sided exact test on two rates (errors, or the
share of requests slower than a quantile); `mann_whitney` is the one-sided
rank test computed from two latency histograms' bucket counts. Pure
functions; scipy (the ``server`` extra) is imported only when Fisher's test
has something to compute, so importing this module stays light.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from coalmine.core.errors import InvalidInput
from coalmine.core.histogram import LatencyHistogram

__all__ = ["MannWhitney", "fisher_greater", "mann_whitney"]


def fisher_greater(a_events: int, a_total: int, b_events: int, b_total: int) -> float:
    """One-sided p-value of Fisher's exact test that group a's rate exceeds group b's.

    Exact at any size, so sparse events (3 of 1,000 against 0 of 9,000) are
    judged on what they are. Needs scipy (the ``server`` extra).
    """
    for what, value in (
        ("a_events", a_events),
        ("a_total", a_total),
        ("b_events", b_events),
        ("b_total", b_total),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInput(f"{what} must be a whole number >= 0, got {value!r}")
    if a_events > a_total or b_events > b_total:
        raise InvalidInput("events cannot exceed totals")
    if a_events == 0 or a_total == 0 or b_total == 0:
        return 1.0
    from coalmine._extras import require

    stats = require("scipy.stats", "server")
    table = [[a_events, a_total - a_events], [b_events, b_total - b_events]]
    result = stats.fisher_exact(table, alternative="greater")
    return min(1.0, max(0.0, float(result.pvalue)))


@dataclass(frozen=True, slots=True)
class MannWhitney:
    """The Mann-Whitney U test of canary against stable, from bucket counts."""

    u: float
    """pairs (canary, stable) where canary is slower, ties counting one half"""
    p_greater: float
    """one-sided p-value that the canary is stochastically slower"""
    share: float
    """u over all pairs: the probability a canary request is slower than a stable one"""


def mann_whitney(canary: LatencyHistogram, stable: LatencyHistogram) -> MannWhitney:
    """Mann-Whitney U from two histograms' bucket counts, in O(buckets).

    Values in one bucket are ties (the data is binned at 1%). The variance has
    the tie correction, and the p-value is the normal approximation with a
    continuity correction: what ``scipy.stats.mannwhitneyu(x, y,
    alternative="greater", method="asymptotic")`` gives on the bucketed values.
    """
    if not canary.same_layout(stable):
        raise InvalidInput("Mann-Whitney U needs two histograms with the same layout")
    n1, n2 = canary.count, stable.count
    if not n1 or not n2:
        return MannWhitney(0.0, 1.0, 0.5)
    a = dict(canary.bins())
    b = dict(stable.bins())
    # The zero bucket sorts below every other (an index below any real one).
    zero = min([*a, *b, 0]) - 1
    a[zero], b[zero] = canary.zero_count, stable.zero_count
    u = 0.0
    below = 0
    ties = 0
    for index in sorted(a.keys() | b.keys()):
        x, y = a.get(index, 0), b.get(index, 0)
        u += x * (below + y / 2)
        below += y
        t = x + y
        ties += t * t * t - t
    n = n1 + n2
    mean = n1 * n2 / 2
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0:
        return MannWhitney(u, 1.0, 0.5)
    z = (u - mean - 0.5) / math.sqrt(var)
    return MannWhitney(u, 0.5 * math.erfc(z / math.sqrt(2)), u / (n1 * n2))
