"""The evidence gate: a step advances on a pass with enough evidence; a release whose evidence
cannot come in time pauses, saying how far it is and what to do."""

from __future__ import annotations

import math
from statistics import NormalDist

from coalmine.core.analysis import AnalysisSettings, InconclusivePolicy
from coalmine.core.gate import evidence_gate, stalled
from coalmine.core.histogram import VersionMetrics
from coalmine.core.judge import judge
from coalmine.core.model import Channel
from coalmine.core.verdict import MetricResult, Outcome, Verdict

_N = NormalDist()
SETTINGS = AnalysisSettings(power=0.8)


def traffic(channel: str, requests: int, errors: int) -> VersionMetrics:
    m = VersionMetrics("shop", "cart", "v2" if channel == "canary" else "v1", Channel(channel))
    for i in range(requests):
        m.histogram.add(100.0 * math.exp(0.5 * _N.inv_cdf((i + 0.5) / requests)))
    m.requests, m.errors = requests, errors
    return m


def verdict(canary: int, canary_errors: int, ratio: int = 9, stable_rate: float = 0.01) -> Verdict:
    stable = canary * ratio
    return judge(
        traffic("canary", canary, canary_errors),
        traffic("stable", stable, round(stable * stable_rate)),
        SETTINGS,
    )


ENOUGH = verdict(5000, 50)
SHORT = verdict(1000, 10)
FAILED = verdict(1000, 40)
WAITING = verdict(50, 0)


def test_the_gate_opens_on_a_pass_with_enough_evidence() -> None:
    gate = evidence_gate({"cart": ENOUGH}, SETTINGS)
    assert gate.open
    assert gate.reason == ""
    assert gate.short == ()
    assert next(m.to_dict() for m in gate.metrics) == {
        "function": "cart",
        "metric": "error_rate",
        "evidence": 5000,
        "needed": 3674,
    }
    assert gate.to_dict()["open"] is True


def test_the_gate_stays_shut_without_evidence_or_on_a_fail() -> None:
    gate = evidence_gate({"cart": SHORT, "pay": ENOUGH}, SETTINGS)
    assert not gate.open
    assert gate.reason == (
        "waiting for evidence: cart error_rate 1,000 of 3,684 canary requests;"
        " cart latency_p99 1,000 of 1,986 canary latencies"
    )
    assert [(s.function, s.metric) for s in gate.short] == [
        ("cart", "error_rate"),
        ("cart", "latency_p99"),
    ]
    failed = evidence_gate({"cart": FAILED}, SETTINGS)
    assert not failed.open
    assert failed.reason == "the canary failed analysis (cart)"
    assert not evidence_gate({}, SETTINGS).open


def test_an_inconclusive_verdict_keeps_it_shut_unless_the_owner_opted_out() -> None:
    # over the limit, not proven, on enough evidence (a canary at the limit, unlucky draws)
    metric = MetricResult(
        "error_rate", Outcome.INCONCLUSIVE, "not significant yet", evidence=5000, needed=3700
    )
    unsure = Verdict(Outcome.INCONCLUSIVE, (metric,), (metric.reason,), (), 5000, 45000, True)
    assert not evidence_gate({"cart": unsure}, SETTINGS).open
    # inconclusive: continue is the owner's opt-out: the clock decides unless the canary fails
    lenient = AnalysisSettings(inconclusive=InconclusivePolicy.CONTINUE)
    assert evidence_gate({"cart": unsure}, lenient).open
    assert evidence_gate({"cart": WAITING}, lenient).open
    assert evidence_gate({"cart": SHORT}, lenient).open
    assert not evidence_gate({"cart": FAILED}, lenient).open


def _stalled(v: Verdict, waited: float, *, canary: int = 1000, stable: int = 9000) -> str | None:
    return stalled(
        evidence_gate({"cart": v}, SETTINGS),
        SETTINGS,
        waited=waited,
        elapsed=600.0,
        canary_requests={"cart": canary},
        stable_requests={"cart": stable},
    )


def test_a_release_waits_up_to_max_wait_then_pauses_saying_what_to_do() -> None:
    assert _stalled(SHORT, waited=0) is None
    assert _stalled(SHORT, waited=3599) is None
    assert _stalled(ENOUGH, waited=10_000) is None, "open: nothing to pause for"
    why = _stalled(SHORT, waited=3600)
    assert why == (
        "not enough evidence to judge the canary 1h after the step's hold ended: cart"
        " error_rate 1,000 of 3,684 canary requests needed to catch +1 pp errors with 80%"
        " power (at 100 a minute, about 27 min more); cart latency_p99 1,000 of 1,986 canary"
        " latencies needed to catch p99 +20% with 80% power (at 100 a minute, about 10 min"
        " more); give it more time (resume: the step waits up to max_wait again), a larger"
        " step (more exposure), or a wider limit (error_rate.max_increase_pp,"
        " latency_p99.max_increase_pct)"
    )


def test_evidence_that_can_never_come_pauses_at_once() -> None:
    assert _stalled(WAITING, waited=0, canary=0) == (
        "not enough evidence to judge the canary: cart has served no canary request; check"
        " that traffic reaches the canary, or raise the step's exposure"
    )
    at_100 = judge(traffic("canary", 1000, 10), traffic("stable", 0, 0), SETTINGS)
    assert _stalled(at_100, waited=0, stable=0) == (
        "not enough evidence to judge the canary: cart stable serves no traffic (at 100%"
        " exposure there is nothing to compare the canary with): judge it at a step below"
        " 100%, or turn analysis off for this release"
    )
