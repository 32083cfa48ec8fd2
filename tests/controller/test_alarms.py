"""Alarms: raised over HTTP (stored, rolling back at once) and Prometheus queries (a real server).

- a transition to ALARM during a release rolls it back at once, with the alarm's reason;
- an alarm already firing when the release was created is reported and does not roll
  back (fix forward); a later OK -> ALARM does;
- the controller re-checks stored alarms every tick (a rollback lost to a crash);
- a Prometheus alarm fires when its query crosses the threshold and the release rolls
  back; one firing before the release is not attributed; an unreachable Prometheus or
  a bad query is reported and never rolls back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coalmine.controller.alarms import AlarmWatcher
from coalmine.controller.leader import SoleLeadership
from coalmine.controller.loop import Controller
from coalmine.controller.plane import ControlPlane
from coalmine.controller.schemas import ReleaseCreate
from coalmine.core.alarms import EvaluationState, attributable
from coalmine.core.errors import InvalidInput, NotFound
from coalmine.core.records import ReleaseRecord
from coalmine.integrations.prometheus import PrometheusAlarm
from coalmine.store.db import Store, open_store
from coalmine.store.models import AlarmRow
from tests.controller import ACTOR, APP, T0, FakeClock, NoHooks, closed_port, shop_spec
from tests.controller.prometheus import METRIC, Exporter, PrometheusServer


def controller(svc: ControlPlane, clock: Callable[[], float]) -> Controller:
    return Controller(svc, leadership=SoleLeadership(), hooks=NoHooks(), clock=clock)


def start(svc: ControlPlane, analysis: dict[str, Any] | None = None) -> ReleaseRecord:
    svc.catalog.apply(shop_spec(), ACTOR)
    return svc.releases.start(
        APP,
        ReleaseCreate.model_validate(
            {"candidate": {"cart": "v2"}, "strategy": "10%:1h, 100%", "analysis": analysis or {}}
        ),
        ACTOR,
    )


# -- HTTP-raised alarms ---------------------------------------------------------------


def test_an_alarm_firing_during_a_release_rolls_it_back_at_once(
    svc: ControlPlane, clock: FakeClock
) -> None:
    release = start(svc)
    ctl = controller(svc, clock)
    ctl.tick()
    clock.advance(30)
    ok = svc.alarms.raise_alarm(APP, "p99", "OK", "p99 is 120 ms", ACTOR)
    assert (ok.action, ok.changed, ok.release_id) == ("none", True, release.id)
    assert svc.releases.get(release.id).phase == "running"

    clock.advance(30)
    handled = svc.alarms.raise_alarm(APP, "p99", "ALARM", "p99 > 500 ms for 3 datapoints", ACTOR)
    assert handled.action == "rolled_back"
    assert handled.changed
    assert handled.alarm.since == T0 + 60
    after = svc.releases.get(release.id)
    assert after.phase == "rolling_back", "at once, before any tick"
    assert after.reason == "alarm p99 fired: p99 > 500 ms for 3 datapoints"
    assert svc.snapshots.snapshot(APP).to_dict()["release"]["phase"] == "rolling_back"
    events = svc.audit.events(release_id=release.id, limit=100)
    assert (events[-1].kind, events[-1].actor) == ("rolling_back", "alarm:p99")
    assert events[-1].message == "rolling back: alarm p99 fired: p99 > 500 ms for 3 datapoints"
    assert ctl.tick() == 1
    assert svc.releases.get(release.id).phase == "rolled_back"
    assert [a.state for a in svc.alarms.of_app(APP)] == ["ALARM"]


def test_an_alarm_firing_before_the_release_is_reported_not_attributed(
    svc: ControlPlane, clock: FakeClock
) -> None:
    svc.catalog.apply(shop_spec(), ACTOR)
    before = svc.alarms.raise_alarm(APP, "errors", "ALARM", "5xx > 5%", ACTOR)
    assert (before.action, before.release_id) == ("none", None)
    assert before.message == "alarm errors is firing: 5xx > 5% (no active release)"
    app_events = svc.audit.events(app=APP, limit=1000)
    assert (app_events[-1].kind, app_events[-1].release_id) == ("alarm", None)

    clock.advance(60)
    release = start(svc)  # a fix-forward release while the alarm fires
    ctl = controller(svc, clock)
    ctl.tick()
    assert svc.releases.get(release.id).phase == "running"
    reported = [e for e in svc.audit.events(release_id=release.id) if e.kind == "alarm"]
    assert len(reported) == 1, "the controller reports it once"
    assert reported[0].message == (
        "alarm errors has been firing since 2023-11-14 22:13:20Z, before release shop-1 was"
        " created: not attributed to the canary, no rollback (5xx > 5%)"
    )
    clock.advance(1)
    ctl.tick()
    assert len([e for e in svc.audit.events(release_id=release.id) if e.kind == "alarm"]) == 1

    again = svc.alarms.raise_alarm(APP, "errors", "ALARM", "5xx > 5%", ACTOR)  # still firing
    assert (again.action, again.changed) == ("not_attributed", False)
    assert "not attributed to the canary" in again.message
    assert svc.releases.get(release.id).phase == "running"

    clock.advance(30)
    assert svc.alarms.raise_alarm(APP, "errors", "OK", "5xx < 1%", ACTOR).action == "none"
    clock.advance(30)
    fired = svc.alarms.raise_alarm(APP, "errors", "ALARM", "5xx > 5% again", ACTOR)
    assert fired.action == "rolled_back", "OK -> ALARM during the release is attributable"
    assert svc.releases.get(release.id).reason == "alarm errors fired: 5xx > 5% again"


def test_the_controller_rolls_back_for_a_stored_alarm_whose_rollback_was_lost(
    svc: ControlPlane, clock: FakeClock, store: Store
) -> None:
    release = start(svc)
    ctl = controller(svc, clock)
    ctl.tick()
    clock.advance(10)
    with store.transaction() as s:  # the state was stored, then the process died
        s.add(
            AlarmRow(
                app=APP,
                name="cpu",
                state="ALARM",
                reason="cpu > 90%",
                since=clock.now,
                updated_at=clock.now,
            )
        )
    assert ctl.tick() == 2
    done = svc.releases.get(release.id)
    assert done.phase == "rolled_back"
    assert done.reason == "alarm cpu fired: cpu > 90%"
    assert svc.audit.events(release_id=release.id, limit=100)[-2].actor == "alarm:cpu"


def test_alarms_of_unknown_apps_and_bad_states_write_nothing(
    svc: ControlPlane, clock: FakeClock
) -> None:
    with pytest.raises(NotFound):
        svc.alarms.raise_alarm("nope", "p99", "ALARM", "", ACTOR)
    svc.catalog.apply(shop_spec(), ACTOR)
    with pytest.raises(InvalidInput, match="invalid alarm state 'FIRE'"):
        svc.alarms.raise_alarm(APP, "p99", "FIRE", "", ACTOR)
    with pytest.raises(InvalidInput, match="invalid alarm name"):
        svc.alarms.raise_alarm(APP, " p99", "ALARM", "", ACTOR)
    assert svc.alarms.of_app(APP) == []
    assert svc.alarms.firing() == []


def test_attribution_is_by_when_the_alarm_started_firing() -> None:
    assert attributable(alarm_since=T0 + 1, release_created_at=T0)
    assert attributable(alarm_since=T0, release_created_at=T0), "a tie rolls back"
    assert not attributable(alarm_since=T0 - 1, release_created_at=T0)


def test_a_watcher_without_firing_alarms_reads_nothing_else(
    svc: ControlPlane, clock: FakeClock
) -> None:
    start(svc)
    assert AlarmWatcher(svc.alarms, svc.releases).check() == 0


# -- PrometheusAlarm on canned answers ------------------------------------------------


def canned(answer: dict[str, Any] | str, status: int = 200) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/query"
        if isinstance(answer, str):
            return httpx.Response(status, text=answer)
        return httpx.Response(status, json=answer)

    return httpx.MockTransport(handle)


def vector(*values: float) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"fn": f"f{i}"}, "value": [T0, str(v)]} for i, v in enumerate(values)
            ],
        },
    }


def alarm(answer: dict[str, Any] | str, status: int = 200, **kw: Any) -> PrometheusAlarm:
    spec = {"name": "p99", "prometheus": "http://prom.test:9090/", "query": "q", "above": 0.5}
    return PrometheusAlarm.from_spec({**spec, **kw}, transport=canned(answer, status))


def test_prometheus_alarm_reads_vectors_and_scalars() -> None:
    fired = alarm(vector(0.1, 0.7, 0.9)).evaluate()
    assert fired.state is EvaluationState.FIRING
    assert fired.detail == 'q = 0.9{fn="f2"} > 0.5 (2 of 3 series)'
    assert fired.value == 0.9
    calm = alarm(vector(0.1, 0.2)).evaluate()
    assert (calm.state, calm.detail) == (EvaluationState.OK, 'q = 0.2{fn="f1"}, fires > 0.5')
    empty = alarm(vector()).evaluate()
    assert (empty.state, empty.detail) == (EvaluationState.OK, "q returned no samples")
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [T0, "0.1"]}}
    low = alarm(scalar, above=None, below=0.5).evaluate()
    assert (low.state, low.detail) == (EvaluationState.FIRING, "q = 0.1 < 0.5")
    nan = alarm(vector(float("nan"))).evaluate()
    assert nan.state is EvaluationState.OK


def test_prometheus_alarm_errors_are_errors_never_firing() -> None:
    bad = {"status": "error", "errorType": "bad_data", "error": "parse error near secret=s3cr3t"}
    rejected = alarm(bad, 400).evaluate()
    assert rejected.state is EvaluationState.ERROR
    assert rejected.detail == (
        "Prometheus at http://prom.test:9090 rejected 'q': answered 400 (bad_data)"
    ), "what the server says is not repeated"
    assert alarm("<html>", 502).evaluate().state is EvaluationState.ERROR
    matrix = {"status": "success", "data": {"resultType": "matrix", "result": []}}
    wrong = alarm(matrix).evaluate()
    assert wrong.state is EvaluationState.ERROR
    assert "instant vector or a scalar" in wrong.detail


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"name": "x", "prometheus": "prom:9090", "query": "q", "above": 1}, "server's URL"),
        ({"name": "x", "prometheus": "http://p", "query": " ", "above": 1}, "PromQL"),
        ({"name": "x", "prometheus": "http://p", "query": "q"}, "exactly one of above or below"),
        ({"name": "x", "prometheus": "http://p", "query": "q", "above": "1"}, "finite number"),
        ({"name": "x", "prometheus": "http://p", "query": "q", "above": 1, "for": 3}, "for"),
        ({"prometheus": "http://p", "query": "q", "above": 1}, "missing name"),
        (
            {"name": "x", "prometheus": "http://p", "query": "q", "above": 1, "timeout": 0},
            "timeout",
        ),
    ],
)
def test_prometheus_alarm_specs_are_validated(spec: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        PrometheusAlarm.from_spec(spec)


# -- a real Prometheus ----------------------------------------------------------------


class Prom:
    def __init__(self, server: PrometheusServer, exporter: Exporter) -> None:
        self.server, self.exporter = server, exporter

    def show(self, value: float) -> None:
        """Set the exporter's value and wait until Prometheus has scraped it."""
        self.exporter.set(value)
        self.server.wait_value(METRIC, value)


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prom]:
    exporter = Exporter()
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), [exporter.target])
    try:
        server.start()
        yield Prom(server, exporter)
    finally:
        server.stop()
        exporter.close()


@pytest.fixture
def real(sqlite_url: str) -> Iterator[ControlPlane]:
    """The service on the real clock (Prometheus answers in real time)."""
    store = open_store(sqlite_url)
    try:
        yield ControlPlane(store)
    finally:
        store.dispose()


def prometheus_analysis(url: str, query: str = METRIC) -> dict[str, Any]:
    return {
        "interval": "1s",
        "max_inconclusive": 10_000,
        "inconclusive": "continue",
        "alarms": [{"name": "p99", "prometheus": url, "query": query, "above": 0.5}],
    }


def tick_until(ctl: Controller, check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Tick the controller until ``check()`` holds (its state is in the store: polled)."""
    deadline = time.monotonic() + timeout
    while True:
        ctl.tick()
        if check():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def alarm_state(svc: ControlPlane, release_id: str) -> str | None:
    runs = svc.runs.of_release(release_id)
    return runs[-1].results["alarms"]["p99"]["state"] if runs else None


@pytest.mark.slow
def test_a_prometheus_alarm_fires_and_rolls_the_release_back(
    prom: Prom, real: ControlPlane
) -> None:
    prom.show(0.12)
    release = start(real, prometheus_analysis(prom.server.url))
    ctl = controller(real, time.time)
    tick_until(ctl, lambda: alarm_state(real, release.id) == "ok", "an OK evaluation")
    run = real.runs.of_release(release.id)[-1]
    assert run.results["alarms"]["p99"]["preexisting"] is False
    assert real.releases.get(release.id).phase == "running"

    prom.show(0.93)
    tick_until(ctl, lambda: real.releases.get(release.id).phase == "rolled_back", "the rollback")
    reason = real.releases.get(release.id).reason
    assert reason is not None
    assert reason.startswith(f"alarm p99 fired: {METRIC} = 0.93{{")
    assert 'job="coalmine-test"' in reason
    assert reason.endswith("} > 0.5")
    last = real.runs.of_release(release.id)[-1]
    assert (last.outcome, last.action) == ("fail", "rollback")
    rolling = [e for e in real.audit.events(release_id=release.id) if e.kind == "rolling_back"]
    assert rolling[0].actor == "judge"


@pytest.mark.slow
def test_a_prometheus_alarm_firing_before_the_release_is_not_attributed(
    prom: Prom, real: ControlPlane
) -> None:
    prom.show(0.97)
    release = start(real, prometheus_analysis(prom.server.url))
    ctl = controller(real, time.time)
    tick_until(ctl, lambda: alarm_state(real, release.id) == "firing", "a firing evaluation")
    tick_until(ctl, lambda: len(real.runs.of_release(release.id)) >= 2, "a second run")
    assert real.releases.get(release.id).phase == "running", "fix forward: no rollback"
    reports = [e for e in real.audit.events(release_id=release.id) if e.kind == "alarm"]
    assert len(reports) == 1, "reported once, not every interval"
    assert reports[0].message.startswith(
        f"alarm p99 was already firing when release {release.id} was created: {METRIC} = 0.97"
    )
    assert reports[0].message.endswith("not attributed to the canary, no rollback")
    run = real.runs.of_release(release.id)[-1]
    assert run.results["alarms"]["p99"]["preexisting"] is True
    assert run.action == "continue"

    prom.show(0.2)
    tick_until(ctl, lambda: alarm_state(real, release.id) == "ok", "the alarm clearing")
    prom.show(0.8)
    tick_until(ctl, lambda: real.releases.get(release.id).phase == "rolled_back", "the rollback")
    assert (real.releases.get(release.id).reason or "").startswith(
        f"alarm p99 fired: {METRIC} = 0.8"
    )


@pytest.mark.slow
def test_a_bad_query_is_reported_and_does_not_roll_back(prom: Prom, real: ControlPlane) -> None:
    release = start(real, prometheus_analysis(prom.server.url, query="sum(" + METRIC))
    ctl = controller(real, time.time)
    tick_until(ctl, lambda: len(real.runs.of_release(release.id)) >= 2, "two runs")
    assert real.releases.get(release.id).phase == "running"
    assert alarm_state(real, release.id) == "error"
    reports = [e for e in real.audit.events(release_id=release.id) if e.kind == "alarm"]
    assert len(reports) == 1
    assert reports[0].message.startswith("alarm p99 could not be evaluated: Prometheus at")
    assert "bad_data" in reports[0].message
    assert reports[0].message.endswith("(not attributable to the canary: no rollback)")


def test_an_unreachable_prometheus_is_reported_and_does_not_roll_back(
    real: ControlPlane,
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    release = start(real, prometheus_analysis(url))
    ctl = controller(real, time.time)
    tick_until(ctl, lambda: len(real.runs.of_release(release.id)) >= 2, "two runs")
    assert real.releases.get(release.id).phase == "running"
    run = real.runs.of_release(release.id)[-1]
    assert run.results["alarms"]["p99"]["state"] == "error"
    assert run.action == "continue"
    analysis = [e for e in real.audit.events(release_id=release.id) if e.kind == "analysis"]
    assert analysis[-1].message.endswith("; alarm p99 could not be evaluated (no rollback)")
    reports = [e for e in real.audit.events(release_id=release.id) if e.kind == "alarm"]
    assert len(reports) == 1
    assert reports[0].message.startswith(
        f"alarm p99 could not be evaluated: cannot query Prometheus at {url}"
    )


def test_a_prometheus_that_cannot_be_installed_skips_or_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tests.controller import prometheus

    script = tmp_path / "install-prometheus.sh"
    script.write_text("#!/bin/sh\necho 'install-prometheus: apt-get update failed' >&2\nexit 1\n")
    script.chmod(0o755)
    monkeypatch.setattr(prometheus, "INSTALL", script)
    monkeypatch.setattr(prometheus.shutil, "which", lambda _name: None)
    monkeypatch.delenv("COALMINE_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get update failed"):
        prometheus.prometheus_binary()
    monkeypatch.setenv("COALMINE_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="COALMINE_REQUIRE_SERVICES=1"):
        prometheus.prometheus_binary()
