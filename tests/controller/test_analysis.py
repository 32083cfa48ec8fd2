"""The analysis step in the real controller over the real store (SQLite and PostgreSQL).

Metrics go in through `ControlPlane.ingest_metrics` (as flushed by SDKs and
gateways), one 10-second window per interval; the clock is a fake one, so
every interval is exact.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from sqlalchemy import update

from coalmine.controller.analysis import AnalysisRunner, combine
from coalmine.controller.analysis_settings import release_analysis
from coalmine.controller.leader import SoleLeadership
from coalmine.controller.loop import Controller
from coalmine.controller.plane import ControlPlane
from coalmine.controller.schemas import MetricsBatch, ReleaseCreate
from coalmine.core.errors import InvalidInput
from coalmine.core.histogram import VersionMetrics
from coalmine.core.judge import Outcome, judge
from coalmine.core.machine import Command
from coalmine.core.records import ReleaseRecord
from coalmine.metrics.recorder import MetricWindow
from coalmine.store.db import open_store
from coalmine.store.models import ReleaseRow
from tests.controller import ACTOR, APP, T0, FakeClock, NoHooks, shop_spec

WINDOW = 10.0
ANALYSIS = {"interval": "10s", "min_requests": 100, "failure_limit": 2, "max_inconclusive": 2}

Side = tuple[int, int, float]
"""(requests, errors, median latency in ms) of one channel in one window"""
HEALTHY: Side = (2700, 27, 10.0)


def controller(svc: ControlPlane, clock: FakeClock) -> Controller:
    return Controller(svc, leadership=SoleLeadership(), hooks=NoHooks(), clock=clock)


def start(
    svc: ControlPlane,
    *,
    candidate: dict[str, str] | None = None,
    strategy: str = "10%:1h, 100%",
    analysis: dict[str, Any] | None = None,
) -> ReleaseRecord:
    svc.catalog.apply(shop_spec(), ACTOR)
    return svc.releases.start(
        APP,
        ReleaseCreate.model_validate(
            {
                "candidate": candidate or {"cart": "v2"},
                "strategy": strategy,
                "analysis": ANALYSIS if analysis is None else analysis,
            }
        ),
        ACTOR,
    )


def window(fn: str, version: str, channel: str, at: float, side: Side, seed: int) -> Any:
    requests, errors, median = side
    m = VersionMetrics(APP, fn, version, channel)  # type: ignore[arg-type]
    rng = random.Random(seed)
    for i in range(requests):
        m.record(median * math.exp(rng.gauss(0, 0.3)), error=i < errors)
    return MetricWindow(at, m).to_dict()


def feed(
    svc: ControlPlane,
    at: float,
    canary: Side,
    stable: Side = HEALTHY,
    *,
    fn: str = "cart",
) -> None:
    """One window of traffic of ``fn`` at ``at``: the candidate v2 in canary, v1 in stable."""
    seed = int(at) % 100_000
    windows = [
        window(fn, "v2", "canary", at, canary, seed),
        window(fn, "v1", "stable", at, stable, seed + 1),
    ]
    batch = MetricsBatch.model_validate({"app": APP, "window": WINDOW, "windows": windows})
    svc.metrics.ingest(APP, batch, "test")


def interval(
    svc: ControlPlane,
    clock: FakeClock,
    ctl: Controller,
    canary: Side,
    stable: Side = HEALTHY,
    *,
    functions: tuple[str, ...] = ("cart",),
) -> int:
    """Traffic for one window, then the clock moves to the next analysis and the loop ticks."""
    for fn in functions:
        feed(svc, clock.now, canary if fn == functions[-1] else HEALTHY, stable, fn=fn)
    clock.advance(WINDOW)
    return ctl.tick()


def kinds(svc: ControlPlane, release_id: str) -> list[str]:
    return [e.kind for e in svc.audit.events(release_id=release_id, limit=1000)]


def test_a_canary_with_more_errors_rolls_back_after_failure_limit_intervals(
    svc: ControlPlane, clock: FakeClock
) -> None:
    release = start(svc)
    ctl = controller(svc, clock)
    assert ctl.tick() == 1  # started at 10%
    assert svc.runs.of_release(release.id) == []

    interval(svc, clock, ctl, (300, 30, 10.0))
    run = svc.runs.of_release(release.id)[-1]
    assert (run.outcome, run.action) == ("fail", "continue")
    assert (run.window_start, run.window_end) == (T0, T0 + 10)
    assert run.results["tracker"]["consecutive_failures"] == 1
    assert svc.releases.get(release.id).phase == "running", "one failed interval of two"
    assert ctl.analysis.next_due_at() == T0 + 20

    made = interval(svc, clock, ctl, (300, 30, 10.0))
    assert made == 2, "rolling back (the judge), then rolled back in the same tick"
    done = svc.releases.get(release.id)
    assert done.phase == "rolled_back"
    assert done.reason is not None
    assert done.reason.startswith("canary failed analysis for 2 consecutive intervals: cart")
    assert "error_rate" in done.reason
    assert "canary errors 10% (60 of 600)" in done.reason

    events = svc.audit.events(release_id=release.id, limit=100)
    assert [e.kind for e in events] == [
        "created",
        "started",
        "analysis",
        "analysis",
        "rolling_back",
        "rolled_back",
    ]
    first, second, rolling_back = events[2], events[3], events[4]
    assert first.actor == "judge"
    assert first.message.startswith(
        "canary failed analysis (1 of 2 consecutive failed intervals before rollback): cart"
    )
    assert "\n" not in first.message, "one readable line (shown by release status)"
    assert first.data["outcome"] == "fail"
    assert second.data["action"] == "rollback"
    assert rolling_back.actor == "judge"
    assert "error_rate" in rolling_back.message
    # the data plane sees the rollback: everyone is back on the baseline
    snap = svc.snapshots.snapshot(APP)
    assert snap.to_dict()["release"]["phase"] == "rolled_back"
    assert svc.runs.of_release(release.id)[-1].action == "rollback"


def test_a_slower_canary_rolls_back_naming_the_latency_metric(
    svc: ControlPlane, clock: FakeClock
) -> None:
    release = start(svc)
    ctl = controller(svc, clock)
    ctl.tick()
    interval(svc, clock, ctl, (300, 3, 25.0))
    interval(svc, clock, ctl, (300, 3, 25.0))
    done = svc.releases.get(release.id)
    assert done.phase == "rolled_back"
    assert done.reason is not None
    assert "cart latency_p50" in done.reason or "cart latency_p95" in done.reason
    assert "error_rate" not in done.reason, "only the failing metrics are the reason"
    run = svc.runs.of_release(release.id)[-1]
    metrics = {m["name"]: m["outcome"] for m in run.results["functions"]["cart"]["metrics"]}
    assert metrics["error_rate"] == "pass"
    assert metrics["latency_p99"] == "fail"


def test_a_healthy_canary_waits_for_evidence_then_is_promoted_by_the_steps(
    svc: ControlPlane, clock: FakeClock
) -> None:
    """The first step's 30 s hold is over long before the judge could catch +1 pp errors
    over stable's 1% with power 0.8 (about 3,700 canary requests at 10%): the step waits,
    every run saying how far the evidence is, and advances the tick it is in."""
    release = start(svc, strategy="10%:30s, 50%:30s, 100%")
    ctl = controller(svc, clock)
    ctl.tick()
    for _ in range(40):
        interval(svc, clock, ctl, (300, 3, 10.0))
        if svc.releases.get(release.id).phase == "promoted":
            break
    done = svc.releases.get(release.id)
    assert done.phase == "promoted"
    runs = svc.runs.of_release(release.id)
    assert {r.outcome for r in runs} == {"pass"}
    assert {r.action for r in runs} == {"continue"}
    assert {r.window_start for r in runs} == {T0}, "cumulative from the start of traffic"
    kinds_ = kinds(svc, release.id)
    first_step = kinds_.index("step")
    analyses_before = kinds_[:first_step].count("analysis")
    assert analyses_before > 3, "held past its 30 s hold, waiting for evidence"
    evidence = [r.results["evidence"] for r in runs]
    assert [e["open"] for e in evidence[: analyses_before - 1]] == [False] * (analyses_before - 1)
    assert evidence[analyses_before - 1]["open"] is True, "the step advanced on the open gate"
    errors = next(m for m in evidence[0]["metrics"] if m["metric"] == "error_rate")
    assert errors == {
        "function": "cart",
        "metric": "error_rate",
        "evidence": 300,
        "needed": errors["needed"],
    }
    assert 3000 < errors["needed"] < 5000
    cart = runs[analyses_before - 1].results["functions"]["cart"]
    assert cart["canary_requests"] >= errors["needed"]
    assert kinds_[first_step:] == [
        "step",
        "analysis",
        "analysis",
        "analysis",
        "step",
        "promoting",
        "promoted",
    ]
    waiting = svc.audit.events(release_id=release.id, limit=100)[4]
    assert waiting.kind == "analysis"
    assert waiting.message.startswith("canary passed analysis: cart error_rate: canary errors 1%")
    assert "; waiting for evidence: cart error_rate 900 of " in waiting.message
    assert waiting.data["evidence"]["open"] is False
    clock.advance(60)
    assert ctl.tick() == 0
    assert len(svc.runs.of_release(release.id)) == len(runs), "no analysis after the release ends"


def test_too_little_traffic_waits_for_evidence_and_pauses_when_it_cannot_come(
    svc: ControlPlane, clock: FakeClock
) -> None:
    """Too little traffic is evidence still coming, never a pass and never a rollback: the
    release waits past its hold up to max_wait, then pauses saying how far the evidence
    is and what to do; resumed, it waits again."""
    release = start(svc, strategy="10%:20s, 100%", analysis={**ANALYSIS, "max_wait": "30s"})
    ctl = controller(svc, clock)
    ctl.tick()
    quiet = (20, 0, 10.0)
    interval(svc, clock, ctl, quiet)
    interval(svc, clock, ctl, quiet)  # the hold is over at T0 + 20
    runs = svc.runs.of_release(release.id)
    assert [(r.outcome, r.action) for r in runs] == [("inconclusive", "continue")] * 2
    assert runs[0].results["reason"] == "cart: too little traffic (canary 20 requests, need 100)"
    assert runs[0].results["tracker"]["reason"].startswith("waiting for evidence: cart: too")
    assert runs[0].results["tracker"]["consecutive_inconclusive"] == 0
    interval(svc, clock, ctl, quiet)
    interval(svc, clock, ctl, quiet)
    assert svc.releases.get(release.id).phase == "running", "waiting up to max_wait (30 s)"
    interval(svc, clock, ctl, quiet)  # T0 + 50: 30 s after the hold
    paused = svc.releases.get(release.id)
    assert paused.phase == "paused"
    assert paused.step == 0, "never promoted by the clock"
    assert paused.reason is not None
    assert paused.reason.startswith(
        "not enough evidence to judge the canary 30s after the step's hold ended: cart"
        " error_rate 100 of "
    )
    assert "canary requests needed to catch +1 pp errors with 90% power (at 120 a minute," in (
        paused.reason
    )
    assert paused.reason.endswith(
        "give it more time (resume: the step waits up to max_wait again), a larger step"
        " (more exposure), or a wider limit (error_rate.max_increase_pp,"
        " latency_p50.max_increase_pct, latency_p95.max_increase_pct,"
        " latency_p99.max_increase_pct)"
    )
    assert kinds(svc, release.id)[-1] == "paused"
    assert svc.audit.events(release_id=release.id, limit=100)[-1].actor == "judge"

    # paused: no analysis; resumed by an operator: it waits max_wait again
    clock.advance(60)
    ctl.tick()
    assert len(svc.runs.of_release(release.id)) == 5
    svc.releases.operate(release.id, Command.RESUME, ACTOR)
    interval(svc, clock, ctl, quiet)
    interval(svc, clock, ctl, quiet)
    assert svc.releases.get(release.id).phase == "running"
    interval(svc, clock, ctl, quiet)
    assert svc.releases.get(release.id).phase == "paused"


def test_a_canary_that_serves_nothing_pauses_once_its_hold_is_over(
    svc: ControlPlane, clock: FakeClock
) -> None:
    release = start(svc, strategy="10%:20s, 100%")
    ctl = controller(svc, clock)
    ctl.tick()
    interval(svc, clock, ctl, (0, 0, 10.0))
    assert svc.releases.get(release.id).phase == "running", "the hold is not over"
    interval(svc, clock, ctl, (0, 0, 10.0))
    paused = svc.releases.get(release.id)
    assert paused.phase == "paused"
    assert paused.reason == (
        "not enough evidence to judge the canary: cart has served no canary request; check"
        " that traffic reaches the canary, or raise the step's exposure"
    )


def test_no_data_at_all_is_inconclusive(svc: ControlPlane, clock: FakeClock) -> None:
    release = start(svc, analysis={**ANALYSIS, "inconclusive": "continue"})
    ctl = controller(svc, clock)
    ctl.tick()
    for _ in range(4):
        clock.advance(WINDOW)
        ctl.tick()
    runs = svc.runs.of_release(release.id)
    assert [r.outcome for r in runs] == ["inconclusive"] * 4
    no_calls = (
        "no data: no changed function (cart) has served a call in either channel since"
        " traffic started"
    )
    assert runs[0].results["reason"] == no_calls
    assert runs[0].results["functions"]["cart"]["idle"] is True
    assert svc.releases.get(release.id).phase == "running", "its 1 h hold is not over"
    assert runs[-1].results["tracker"]["reason"] == f"waiting for evidence: {no_calls}"


def test_the_worst_function_decides_and_is_named(svc: ControlPlane, clock: FakeClock) -> None:
    release = start(svc, candidate={"cart": "v2", "pay": "v2"})
    ctl = controller(svc, clock)
    ctl.tick()
    interval(svc, clock, ctl, (300, 45, 10.0), functions=("cart", "pay"))
    run = svc.runs.of_release(release.id)[-1]
    assert run.outcome == "fail"
    assert run.results["functions"]["cart"]["outcome"] == "pass"
    assert run.results["functions"]["pay"]["outcome"] == "fail"
    assert run.results["reason"].startswith("pay error_rate: canary errors 15%")


def test_a_restarted_controller_keeps_the_failure_count(
    svc: ControlPlane, clock: FakeClock, database_url: str
) -> None:
    release = start(svc)
    first = controller(svc, clock)
    first.tick()
    interval(svc, clock, first, (300, 30, 10.0))
    assert svc.releases.get(release.id).phase == "running"

    # a new process: its own store, service and controller
    store = open_store(database_url)
    try:
        svc2 = ControlPlane(store, clock=clock)
        second = controller(svc2, clock)
        feed(svc2, clock.now, (300, 30, 10.0))
        clock.advance(WINDOW - 5)
        assert second.tick() == 0, "due 10 s after the last run, whoever runs it"
        clock.advance(5)
        assert second.tick() == 2
        done = svc2.releases.get(release.id)
        assert done.phase == "rolled_back"
        assert done.reason is not None
        assert done.reason.startswith("canary failed analysis for 2 consecutive intervals")
    finally:
        store.dispose()


def test_a_rollback_decided_before_a_crash_is_carried_out_after_it(
    svc: ControlPlane, clock: FakeClock, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = start(svc, analysis={**ANALYSIS, "failure_limit": 1})
    ctl = controller(svc, clock)
    ctl.tick()

    def crash(*_args: object, **_kw: object) -> None:
        raise RuntimeError("the controller died here")

    monkeypatch.setattr(svc.releases, "operate", crash)
    interval(svc, clock, ctl, (300, 30, 10.0))
    assert svc.runs.of_release(release.id)[-1].action == "rollback"
    assert svc.releases.get(release.id).phase == "running", "the rollback never happened"

    store = open_store(database_url)
    try:
        svc2 = ControlPlane(store, clock=clock)
        assert controller(svc2, clock).tick() == 2, "carried out at once, not an interval later"
        done = svc2.releases.get(release.id)
        assert done.phase == "rolled_back"
        assert done.reason is not None
        assert done.reason.startswith("canary failed analysis for 1 interval: cart error_rate")
        assert len(svc2.runs.of_release(release.id)) == 1
    finally:
        store.dispose()


def test_releases_without_analysis_are_not_analysed(svc: ControlPlane, clock: FakeClock) -> None:
    release = start(svc, analysis={"enabled": False})
    ctl = controller(svc, clock)
    ctl.tick()
    interval(svc, clock, ctl, (300, 300, 10.0))
    interval(svc, clock, ctl, (300, 300, 10.0))
    assert svc.runs.of_release(release.id) == []
    assert svc.releases.get(release.id).phase == "running"
    assert ctl.analysis.next_due_at() is None


def test_invalid_settings_are_refused_at_start_and_pause_a_stored_release(
    svc: ControlPlane, clock: FakeClock
) -> None:
    with pytest.raises(InvalidInput, match="analysis: unknown analysis field"):
        start(svc, analysis={"intervall": "1m"})
    with pytest.raises(
        InvalidInput, match=r"alarms\[1\]: alarm p99: give exactly one of above or below"
    ):
        start(
            svc,
            analysis={
                "alarms": [{"name": "p99", "prometheus": "http://127.0.0.1:1", "query": "x"}]
            },
        )
    assert svc.releases.recent(APP) == []

    release = start(svc)
    with svc.store.transaction() as s:  # a row written before validation existed
        s.execute(
            update(ReleaseRow).where(ReleaseRow.id == release.id).values(analysis={"interval": 0})
        )
    ctl = controller(svc, clock)
    ctl.tick()
    clock.advance(WINDOW)
    ctl.tick()
    paused = svc.releases.get(release.id)
    assert paused.phase == "paused"
    assert paused.reason is not None
    assert paused.reason.startswith("analysis settings are invalid: analysis: interval")


def test_release_analysis_reads_settings_and_alarms() -> None:
    assert release_analysis({}) is None
    assert release_analysis(None) is None
    spec = release_analysis(
        {
            "interval": "30s",
            "alarms": [
                {"name": "p99", "prometheus": "http://127.0.0.1:9090", "query": "up", "above": 0}
            ],
        }
    )
    assert spec is not None
    assert spec.settings.interval == 30.0
    assert [a.name for a in spec.alarms] == ["p99"]
    with pytest.raises(InvalidInput, match=r"analysis: alarms\[1\]: unknown kind"):
        release_analysis({"alarms": [{"name": "x", "datadog": "monitor-1"}]})


def test_combine_takes_the_worst_and_names_function_and_metric() -> None:
    def side(channel: str, n: int, errors: int) -> VersionMetrics:
        m = VersionMetrics(APP, "cart", "v2" if channel == "canary" else "v1", channel)  # type: ignore[arg-type]
        for i in range(n):
            m.record(10.0 + i % 7, error=i < errors)
        return m

    settings = release_analysis({"metrics": {"latency_p50": None}})
    assert settings is not None
    ok = judge(side("canary", 500, 5), side("stable", 5000, 50), settings.settings)
    bad = judge(side("canary", 500, 100), side("stable", 5000, 50), settings.settings)
    low = judge(side("canary", 5, 0), side("stable", 5000, 50), settings.settings)
    both = combine({"cart": ok, "pay": bad, "notify": low})
    assert both.outcome is Outcome.FAIL
    assert both.reasons == (f"pay error_rate: {bad.metric('error_rate').reason}",)
    assert both.canary_requests == 1005
    quiet = combine({"cart": ok, "notify": low})
    assert quiet.outcome is Outcome.INCONCLUSIVE
    assert quiet.reason == "notify: too little traffic (canary 5 requests, need 200)"
    assert combine({}).outcome is Outcome.INCONCLUSIVE


def test_metrics_that_cannot_be_read_are_inconclusive_never_a_pass(
    svc: ControlPlane, clock: FakeClock
) -> None:
    class Broken:
        def metrics_for(self, *args: object, **kwargs: object) -> VersionMetrics:
            raise ConnectionError("metrics store unreachable")

        def metrics_for_many(self, *args: object, **kwargs: object) -> list[VersionMetrics]:
            raise ConnectionError("metrics store unreachable")

    release = start(svc)
    ctl = Controller(
        svc,
        leadership=SoleLeadership(),
        hooks=NoHooks(),
        clock=clock,
        analysis=AnalysisRunner(svc, metrics=Broken(), clock=clock),
    )
    ctl.tick()
    clock.advance(WINDOW)
    ctl.tick()
    run = svc.runs.of_release(release.id)[-1]
    assert run.outcome == "inconclusive"
    assert run.results["reason"] == "cart: metrics unavailable: metrics store unreachable"
