"""How fast each judge catches a bad canary, and how often it rolls back a good one.

Simulated traffic at 10% canary, many seeded trials per scenario, three
judges fed the same requests:

* ``coalmine``: `coalmine.core.judge.judge` with the default `AnalysisSettings`
  (error rate +1 pp, p50/p95/p99 +20%, 99% confidence, min 200 requests) on
  the *cumulative* per-version metrics since the release started, built the way
  the data plane builds them (each interval's requests become a delta
  `LatencyHistogram` in its JSON wire form, merged into `VersionMetrics`), and
  its `Tracker`: roll back after 2 failed intervals in a row.
* ``alias_alarm``: what a CloudWatch alarm on a Lambda weighted alias sees:
  the p99 latency and the error rate of *all* traffic (canary and stable
  mixed) in each interval, breaching when p99 > 1.2x the pre-release p99 or
  the error rate > the pre-release rate + 1 pp (both measured on 5 intervals
  of stable-only traffic before the release); 2 breaching intervals in a row
  roll back (CloudWatch's "2 out of 2 datapoints").
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
  when any metric is High or Low (with two metrics, the score is at most 50,
  below a usual marginal threshold of 75); 2 failed intervals in a row roll
  back, the same rule as the others. Outlier removal is off.

Traffic: 2,500 requests a minute (one interval), 250 canary and 2,250 stable;
latency lognormal with median 100 ms and sigma 0.5 (p99 320 ms); 1% errors;
20 intervals, so each release sees 5,000 canary requests. Scenarios:

* regressions (a rollback is a detection): ``p99x1.5`` (every canary latency
  x1.5), ``errors+2pp`` (canary errors 3%), ``tail_only`` (canary sigma raised
  so its median is stable's but its p99 is 1.5x);
* innocent canaries (any rollback is a false rollback): ``aa`` (A/A: canary
  identical to stable), ``shared_incident`` (from the 5th minute a dependency
  fails for everyone: +3 pp errors and x1.3 latency on both channels),
  ``fix_forward`` (stable already at 8% errors, an alarm that was firing
  before the release; the canary is the fix at 1%).

Run it from the repository root::

    .venv/bin/python bench/detection.py              # 200 trials per scenario, ~45 s on 2 idle cores
    .venv/bin/python bench/detection.py --quick      # a smoke test, a few seconds
    .venv/bin/python bench/detection.py --trials 1000 --jobs 2

It prints a table, the goals (each regression caught in >= 95% of trials
within 5,000 canary requests; false rollbacks on A/A runs <= 1%) with PASS or
MISS, and last one JSON line::

    {"bench": "detection", "trials": .., "detection_rate": {"coalmine": {..},
     "alias_alarm": {..}, "kayenta": {..}}, "median_canary_requests": {..},
     "false_rollback_rate": {"coalmine": .., "alias_alarm": .., "kayenta": ..}, ...}

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
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from coalmine.core.analysis import AnalysisSettings
from coalmine.core.histogram import LatencyHistogram, VersionMetrics
from coalmine.core.judge import Action, Tracker, judge

JUDGES = ("coalmine", "alias_alarm", "kayenta")
MEDIAN_MS = 100.0
SIGMA = 0.5
BASE_ERROR = 0.01
PRE_INTERVALS = 5
FAILURE_LIMIT = 2
ALIAS_P99_FACTOR = 1.2
ALIAS_ERROR_PP = 1.0
KAYENTA_CONFIDENCE = 0.98
KAYENTA_TOLERANCE = 0.25
INCIDENT_FROM = 5
INCIDENT_ERRORS = 0.03
INCIDENT_LATENCY = 1.3
FIX_FORWARD_STABLE_ERRORS = 0.08
SLICES = 10
Z_TAIL_P99 = 2.3263478740408408  # the standard normal's 0.99 quantile

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True)
class Config:
    trials: int
    intervals: int
    interval_requests: int
    canary_share: float
    latency_multiplier: float
    extra_error_pp: float
    tail_multiplier: float
    seed: int
    kayenta_errors: str = "requests"
    """'requests': per-request 0/1 indicators; 'series': error ratios of 10 slices an interval"""

    @property
    def canary_per_interval(self) -> int:
        return round(self.interval_requests * self.canary_share)

    @property
    def stable_per_interval(self) -> int:
        return self.interval_requests - self.canary_per_interval


@dataclass(frozen=True)
class Scenario:
    name: str
    regression: bool
    """True: a rollback is a detection. False: any rollback is a false rollback."""
    canary_latency_x: float = 1.0
    canary_sigma: float = SIGMA
    canary_errors: float = BASE_ERROR
    stable_errors: float = BASE_ERROR
    incident_from: int | None = None


def scenarios(cfg: Config) -> list[Scenario]:
    tail_sigma = SIGMA + math.log(cfg.tail_multiplier) / Z_TAIL_P99
    return [
        Scenario(f"p99x{cfg.latency_multiplier:g}", True, canary_latency_x=cfg.latency_multiplier),
        Scenario(
            f"errors+{cfg.extra_error_pp:g}pp",
            True,
            canary_errors=BASE_ERROR + cfg.extra_error_pp / 100,
        ),
        Scenario("tail_only", True, canary_sigma=tail_sigma),
        Scenario("aa", False),
        Scenario("shared_incident", False, incident_from=INCIDENT_FROM),
        Scenario("fix_forward", False, stable_errors=FIX_FORWARD_STABLE_ERRORS),
    ]


# -- coalmine's side: the data plane's delta histograms -----------------------------------

_LAYOUT = LatencyHistogram()
_LOG_GAMMA = math.log((1 + _LAYOUT.alpha) / (1 - _LAYOUT.alpha))


def delta_histogram(values: FloatArray) -> dict[str, Any]:
    """One interval's latencies as the JSON wire form an SDK would flush (numpy-fast)."""
    zero = values <= _LAYOUT.min_value
    index = np.ceil(np.log(values[~zero]) / _LOG_GAMMA).astype(np.int64)
    keys, counts = np.unique(index, return_counts=True)
    return {
        "alpha": _LAYOUT.alpha,
        "min_value": _LAYOUT.min_value,
        "max_buckets": _LAYOUT.max_buckets,
        "count": int(values.size),
        "sum": float(values.sum()),
        "min": float(values.min()) if values.size else None,
        "max": float(values.max()) if values.size else None,
        "zero": int(zero.sum()),
        "bins": [[int(k), int(c)] for k, c in zip(keys.tolist(), counts.tolist(), strict=True)],
    }


def delta_metrics(channel: str, latencies: FloatArray, errors: BoolArray) -> VersionMetrics:
    return VersionMetrics(
        "bench",
        "place-order",
        "v2" if channel == "canary" else "v1",
        channel,  # type: ignore[arg-type]  # validated into a Channel
        int(latencies.size),
        int(errors.sum()),
        LatencyHistogram.from_dict(delta_histogram(latencies)),
    )


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


# -- one trial ---------------------------------------------------------------------------


def _latencies(
    rng: np.random.Generator, n: int, sigma: float = SIGMA, scale: float = 1.0
) -> FloatArray:
    return rng.lognormal(math.log(MEDIAN_MS), sigma, n) * scale


def run_trial(scenario: Scenario, trial: int, scenario_index: int, cfg: Config) -> dict[str, Any]:
    """Each judge's rollback interval (or None), and whether coalmine paused."""
    rng = np.random.default_rng([cfg.seed, scenario_index, trial])
    pre = _latencies(rng, PRE_INTERVALS * cfg.interval_requests)
    pre_errors = rng.random(pre.size) < BASE_ERROR
    alias_p99 = ALIAS_P99_FACTOR * float(np.quantile(pre, 0.99))
    alias_error = float(pre_errors.mean()) + ALIAS_ERROR_PP / 100

    settings = AnalysisSettings()
    tracker = Tracker.start(settings)
    canary_cum = VersionMetrics("bench", "place-order", "v2", "canary")  # type: ignore[arg-type]
    stable_cum = VersionMetrics("bench", "place-order", "v1", "stable")  # type: ignore[arg-type]
    rolled: dict[str, int | None] = dict.fromkeys(JUDGES)
    streak = dict.fromkeys(JUDGES, 0)
    paused = False
    nc, ns = cfg.canary_per_interval, cfg.stable_per_interval
    for interval in range(1, cfg.intervals + 1):
        incident = scenario.incident_from is not None and interval >= scenario.incident_from
        slow = INCIDENT_LATENCY if incident else 1.0
        extra = INCIDENT_ERRORS if incident else 0.0
        c_lat = _latencies(rng, nc, scenario.canary_sigma, scenario.canary_latency_x * slow)
        s_lat = _latencies(rng, ns, SIGMA, slow)
        c_err = rng.random(nc) < scenario.canary_errors + extra
        s_err = rng.random(ns) < scenario.stable_errors + extra

        if rolled["coalmine"] is None:
            canary_cum.merge(delta_metrics("canary", c_lat, c_err))
            stable_cum.merge(delta_metrics("stable", s_lat, s_err))
            tracker = tracker.observe(judge(canary_cum, stable_cum, settings))
            paused = paused or tracker.action is Action.PAUSE
            if tracker.action is Action.ROLLBACK:
                rolled["coalmine"] = interval

        if rolled["alias_alarm"] is None:
            everyone = np.concatenate([c_lat, s_lat])
            error_rate = (int(c_err.sum()) + int(s_err.sum())) / everyone.size
            breach = float(np.quantile(everyone, 0.99)) > alias_p99 or error_rate > alias_error
            streak["alias_alarm"] = streak["alias_alarm"] + 1 if breach else 0
            if streak["alias_alarm"] >= FAILURE_LIMIT:
                rolled["alias_alarm"] = interval

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
            if streak["kayenta"] >= FAILURE_LIMIT:
                rolled["kayenta"] = interval

        if all(v is not None for v in rolled.values()):
            break
    return {"rolled": rolled, "paused": paused}


def _run_chunk(args: tuple[Scenario, int, range, Config]) -> list[dict[str, Any]]:
    scenario, index, trials, cfg = args
    return [run_trial(scenario, t, index, cfg) for t in trials]


# -- report ------------------------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def summarise(cfg: Config, results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    rate: dict[str, dict[str, float]] = {j: {} for j in JUDGES}
    requests: dict[str, dict[str, float | None]] = {j: {} for j in JUDGES}
    minutes: dict[str, dict[str, float | None]] = {j: {} for j in JUDGES}
    innocent: dict[str, dict[str, float]] = {j: {} for j in JUDGES}
    paused: dict[str, float] = {}
    for scenario in scenarios(cfg):
        runs = results[scenario.name]
        paused[scenario.name] = round(sum(r["paused"] for r in runs) / len(runs), 4)
        for j in JUDGES:
            hits = [r["rolled"][j] for r in runs if r["rolled"][j] is not None]
            share = round(len(hits) / len(runs), 4)
            if scenario.regression:
                rate[j][scenario.name] = share
                requests[j][scenario.name] = _median([h * cfg.canary_per_interval for h in hits])
                minutes[j][scenario.name] = _median([float(h) for h in hits])
            else:
                innocent[j][scenario.name] = share
    return {
        "bench": "detection",
        "trials": cfg.trials,
        "detection_rate": rate,
        "median_canary_requests": requests,
        "false_rollback_rate": {j: innocent[j]["aa"] for j in JUDGES},
        "innocent_rollback_rate": innocent,
        "median_minutes_to_rollback": minutes,
        "coalmine_pause_rate": paused,
        "canary_requests_per_release": cfg.intervals * cfg.canary_per_interval,
        "kayenta_errors": cfg.kayenta_errors,
    }


def _fmt_rate(value: float) -> str:
    return f"{value:6.1%}"


def _fmt_n(value: float | None) -> str:
    return f"{value:,.0f}" if value is not None else "-"


def goals(cfg: Config, out: dict[str, Any]) -> list[tuple[str, bool]]:
    horizon = cfg.intervals * cfg.canary_per_interval
    checks = []
    for scenario in scenarios(cfg):
        if scenario.regression and scenario.name != "tail_only":
            got = out["detection_rate"]["coalmine"][scenario.name]
            checks.append(
                (
                    f"{scenario.name} caught in >= 95% of trials within {horizon:,} canary"
                    f" requests ({got:.1%})",
                    got >= 0.95 and horizon <= 5000,
                )
            )
    fr = out["false_rollback_rate"]["coalmine"]
    checks.append((f"false rollbacks on A/A runs <= 1% ({fr:.1%})", fr <= 0.01))
    return checks


def print_table(cfg: Config, out: dict[str, Any], elapsed: float) -> None:
    horizon = cfg.intervals * cfg.canary_per_interval
    print(
        f"{cfg.trials} trials per scenario; {cfg.canary_share:.0%} canary,"
        f" {cfg.interval_requests:,} requests a minute, {cfg.intervals} one-minute intervals"
        f" ({horizon:,} canary requests); rollback after {FAILURE_LIMIT} failed intervals in a row"
    )
    head = f"{'scenario':<17}" + "".join(f"{j:>28}" for j in JUDGES)
    print()
    print("regressions: share caught, median canary requests (minutes) to rollback")
    print(head)
    for scenario in scenarios(cfg):
        if not scenario.regression:
            continue
        cells = []
        for j in JUDGES:
            r = out["detection_rate"][j][scenario.name]
            n = out["median_canary_requests"][j][scenario.name]
            t = out["median_minutes_to_rollback"][j][scenario.name]
            when = f"{_fmt_n(n)} ({t:g} min)" if n is not None else "-"
            cells.append(f"{_fmt_rate(r)} {when:>20}")
        print(f"{scenario.name:<17}" + "".join(f"{c:>28}" for c in cells))
    print()
    print("innocent canaries: share of trials rolled back (false rollbacks)")
    print(head)
    for scenario in scenarios(cfg):
        if scenario.regression:
            continue
        cells = [_fmt_rate(out["innocent_rollback_rate"][j][scenario.name]) for j in JUDGES]
        print(f"{scenario.name:<17}" + "".join(f"{c:>28}" for c in cells))
    pauses = ", ".join(f"{k} {v:.1%}" for k, v in out["coalmine_pause_rate"].items() if v)
    print()
    print(f"coalmine paused (inconclusive > 5 intervals in a row): {pauses or 'never'}")
    for text, ok in goals(cfg, out):
        print(f"goal: {text}: {'PASS' if ok else 'MISS'}")
    print(f"elapsed {elapsed:.1f} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else "")
    parser.add_argument("--trials", type=int, default=200, help="trials per scenario")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 4 trials")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--intervals", type=int, default=20)
    parser.add_argument("--interval-requests", type=int, default=2500)
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
    if args.trials < 1 or args.intervals < 1 or not 0 < args.canary_share < 1:
        parser.error("--trials and --intervals must be >= 1, --canary-share in (0, 1)")
    cfg = Config(
        trials=4 if args.quick else args.trials,
        intervals=args.intervals,
        interval_requests=args.interval_requests,
        canary_share=args.canary_share,
        latency_multiplier=args.latency_multiplier,
        extra_error_pp=args.extra_error_pp,
        tail_multiplier=args.tail_multiplier,
        seed=args.seed,
        kayenta_errors=args.kayenta_errors,
    )
    started = time.perf_counter()
    chunks: list[tuple[Scenario, int, range, Config]] = []
    size = max(1, math.ceil(cfg.trials / 8))
    for index, scenario in enumerate(scenarios(cfg)):
        for lo in range(0, cfg.trials, size):
            chunks.append((scenario, index, range(lo, min(cfg.trials, lo + size)), cfg))
    results: dict[str, list[dict[str, Any]]] = {s.name: [] for s in scenarios(cfg)}
    if args.jobs > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            done = list(pool.map(_run_chunk, chunks))
    else:
        done = [_run_chunk(chunk) for chunk in chunks]
    for chunk, runs in zip(chunks, done, strict=True):
        results[chunk[0].name].extend(runs)
    out = summarise(cfg, results)
    elapsed = time.perf_counter() - started
    if not args.json_only:
        print_table(cfg, out, elapsed)
    print(json.dumps(out))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
