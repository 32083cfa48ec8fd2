"""bench/detection.py: a small run ends with its JSON line, and its twin of the judge is the judge.

The shape of the output is checked, never the rates (they are the bench's to
report). The bench runs coalmine's judge through `bench/_judge_twin.py`, a
numpy twin fed simulated sufficient statistics; the second test feeds the
twin and the real `coalmine.core.judge.judge` the same looks (the real one
on histograms built from the twin's bucket counts, its state carried from
look to look as the controller carries it) and checks they agree on every
metric's p-value, outcome and evidence needed.
"""

from __future__ import annotations

import importlib
import math
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from coalmine.core.analysis import AnalysisSettings
from coalmine.core.histogram import LatencyHistogram, VersionMetrics
from coalmine.core.judge import JudgeState, Outcome, judge
from coalmine.core.model import Channel
from coalmine.core.stats import RateTest, evidence_needed
from tests.bench import BENCH, run_bench

JUDGES = ("coalmine", "alias_alarm", "kayenta")
TODAY = ("p99x1.5", "errors+2pp", "tail_only")
LIMITS = ("p99x1.2", "errors+1pp", "tail_only_x1.2")
ONE_AND_A_HALF = ("p99x1.3", "errors+1.5pp", "tail_only_x1.3")
INNOCENT = ("aa", "shared_incident", "fix_forward", "aa_200", "shared_incident_200")
TRAFFIC = ("default", "low")


def _rate(value: object) -> None:
    assert isinstance(value, float | int), value
    assert not isinstance(value, bool)
    assert 0 <= value <= 1, value


def _ci(value: object) -> None:
    assert isinstance(value, list), value
    assert len(value) == 3, value
    rate, low, high = value
    for v in value:
        _rate(v)
    assert low <= rate <= high


def test_a_small_run_ends_with_the_json_line() -> None:
    out = run_bench(
        "detection.py",
        "--trials",
        "6",
        "--peer-trials",
        "1",
        "--jobs",
        "1",
        "--long-hold",
        "30",
        "--give-up",
        "20",
        timeout=240,
        min_lines=20,
    )
    assert list(out)[:5] == [
        "bench",
        "trials",
        "detection_rate",
        "median_canary_requests",
        "false_rollback_rate",
    ]
    assert out["bench"] == "detection"
    assert (out["trials"], out["peer_trials"]) == (6, 1)
    keys = [f"{s}@{t}" for s in (*TODAY, *LIMITS, *ONE_AND_A_HALF) for t in TRAFFIC]
    for j in JUDGES:
        assert set(out["detection_rate"][j]) == set(keys)
        assert set(out["promoted_bad_rate"][j]) == set(keys)
        for key in keys:
            _rate(out["detection_rate"][j][key])
            _rate(out["promoted_bad_rate"][j][key])
            _ci(out["detection_ci"][j][key])
            _ci(out["promoted_bad_ci"][j][key])
            n = out["median_canary_requests"][j][key]
            assert n is None or (isinstance(n, float | int) and n > 0)
        _rate(out["false_rollback_rate"][j])
        for s in INNOCENT:
            for t in TRAFFIC:
                _rate(out["innocent_rollback_rate"][j][f"{s}@{t}"])
                _ci(out["innocent_rollback_ci"][j][f"{s}@{t}"])
        assert set(out["promoted_bad_1_5x_limits"][j]) == set(TRAFFIC)
        for t in TRAFFIC:
            _ci(out["promoted_bad_1_5x_limits"][j][t])
        _ci(out["false_rollback_ci"][j])
    assert all(isinstance(g["met"], bool) for g in out["goals"])


# -- the twin against the judge ---------------------------------------------------------


@pytest.fixture
def twin(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("_judge_twin")


def _histogram(tw: ModuleType, counts: np.ndarray) -> LatencyHistogram:
    """A real histogram holding the twin's bucket counts (one value range per bucket)."""
    nonzero = np.flatnonzero(counts)
    if not nonzero.size:
        return LatencyHistogram()
    index = tw.INDEX
    low, high = int(index[nonzero[0]]), int(index[nonzero[-1]])
    return LatencyHistogram.from_dict(
        {
            "alpha": 0.01,
            "min_value": 0.001,
            "max_buckets": 2048,
            "count": int(counts.sum()),
            "sum": float((tw.REPRESENTATIVE * counts).sum()),
            "min": math.exp((low - 1) * tw.LOG_GAMMA) * (1 + 1e-9),
            "max": math.exp(high * tw.LOG_GAMMA),
            "zero": 0,
            "bins": [[int(index[i]), int(counts[i])] for i in nonzero],
        }
    )


def _metrics(channel: str, tw: ModuleType, counts: np.ndarray, errors: int) -> VersionMetrics:
    hist = _histogram(tw, counts)
    return VersionMetrics(
        "bench",
        "place-order",
        "v2" if channel == "canary" else "v1",
        Channel(channel),
        hist.count,
        errors,
        hist,
    )


@pytest.mark.parametrize(
    ("canary_scale", "canary_sigma", "canary_errors"),
    [(1.0, 0.5, 0.01), (1.25, 0.5, 0.01), (1.0, 0.62, 0.025), (0.9, 0.45, 0.005)],
    ids=["aa", "slower", "tail-and-errors", "better"],
)
def test_the_twin_judges_as_the_judge_look_by_look(
    twin: ModuleType, canary_scale: float, canary_sigma: float, canary_errors: float
) -> None:
    rng = np.random.default_rng(7)
    settings = AnalysisSettings(min_requests=100)
    seen: set[Outcome] = set()
    trials, looks = 4, 8
    t = twin.JudgeTwin(trials, settings)
    canary_p = twin.bucket_probabilities(100 * canary_scale, canary_sigma)
    stable_p = twin.bucket_probabilities(100, 0.5)
    states: list[JudgeState | None] = [None] * trials
    for look in range(looks):
        nc, ns = int(rng.integers(40, 90)), int(rng.integers(300, 700))
        c_hist = rng.multinomial(nc, canary_p, size=trials)
        s_hist = rng.multinomial(ns, stable_p, size=trials)
        c_err = rng.binomial(nc, canary_errors, size=trials)
        s_err = rng.binomial(ns, 0.01, size=trials)
        got = t.look(c_hist, s_hist, c_err, s_err, evidence=True)
        for i in range(trials):
            canary = _metrics("canary", twin, t.canary_hist[i], int(t.counts[i, 0]))
            stable = _metrics("stable", twin, t.stable_hist[i], int(t.counts[i, 2]))
            v = judge(canary, stable, settings, state=states[i])
            states[i] = v.state
            seen.update(m.outcome for m in v.metrics)
            where = f"look {look + 1}, trial {i}"
            assert int(got.outcome[i]) == {"pass": 0, "inconclusive": 1, "fail": 2}[v.outcome], (
                where
            )
            assert bool(got.waiting[i]) == v.waiting, where
            assert bool(got.enough[i]) == v.enough, where
            tests = [t.errors, *t.latency]
            assert got.needed is not None
            for test, result, needed in zip(tests, v.metrics, got.needed, strict=True):
                if result.needed is None:
                    assert math.isinf(needed[i]), where
                else:
                    assert abs(needed[i] - result.needed) <= 1, where
                assert v.state is not None
                state = v.state.get(result.name)
                assert state is not None
                assert test.p_value[i] == pytest.approx(state.test.p_value, rel=1e-9, abs=1e-300)
                assert test.phi[i] == pytest.approx(state.test.phi, rel=1e-12)
    assert len(seen) >= 2, "the looks judged more than one way"


def test_the_twins_rate_test_and_evidence_are_the_cores() -> None:
    import sys

    sys.path.insert(0, str(BENCH))
    try:
        tw = importlib.import_module("_judge_twin")
    finally:
        sys.path.remove(str(BENCH))
    rng = np.random.default_rng(3)
    trials = 5
    twin_test = tw.RateTestTwin(trials)
    cores = [RateTest() for _ in range(trials)]
    for _ in range(30):
        n = rng.integers(0, 60, size=trials)
        m = rng.integers(0, 500, size=trials)
        x = rng.binomial(n, 0.05)
        y = rng.binomial(m, 0.03)
        twin_test.observe(x, n, y, m)
        cores = [c.observe(int(x[i]), int(n[i]), int(y[i]), int(m[i])) for i, c in enumerate(cores)]
    for i, core in enumerate(cores):
        assert twin_test.llr[i] == pytest.approx(np.asarray(core.log_lr), rel=1e-9, abs=1e-9)
        assert twin_test.p_value[i] == pytest.approx(core.p_value, rel=1e-9, abs=1e-300)
        assert twin_test.phi[i] == pytest.approx(core.phi, rel=1e-12)
    cases: list[tuple[Any, ...]] = [
        (0.01, 0.02, 0.1, 0.0025, 0.8, 1.0),
        (0.0001, 0.0101, 0.05, 0.001, 0.9, 1.3),
        (0.5, 0.64, 0.3, 0.0025, 0.8, 2.0),
        (0.02, 0.02, 0.1, 0.0025, 0.8, 1.0),
    ]
    for ps, pc, share, alpha, power, phi in cases:
        want = evidence_needed(ps, pc, share, alpha, power, phi)
        got = tw.evidence_needed(
            np.array([ps]), np.array([pc]), np.array([share]), alpha, power, np.array([phi])
        )[0]
        if want is None:
            assert math.isinf(got)
        else:
            assert got == pytest.approx(want, rel=1e-9)
