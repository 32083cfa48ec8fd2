"""Contract tests of the controller's ports: every implementation, one behaviour.

Each port of `coalmine.core.ports` that the controller uses runs the same
checks against its real implementation (SQLite and PostgreSQL where it has
a store, a real HTTP server, a real lock) and its in-memory twin
(`coalmine.controller.memory`, `SoleLeadership`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, nullcontext
from pathlib import Path
from typing import Any

import httpx
import pytest

from coalmine.controller.hooks import HookDispatcher, HttpHookRunner, hook_payload
from coalmine.controller.leader import FileLockLeadership, PgAdvisoryLeadership, SoleLeadership
from coalmine.controller.memory import (
    CallableHookRunner,
    MemoryMetrics,
    MemoryReleaseStore,
    ScriptedAlarm,
)
from coalmine.controller.plane import ControlPlane
from coalmine.controller.schemas import HookSpec, MetricsBatch
from coalmine.core.alarms import EvaluationState
from coalmine.core.errors import InvalidInput, NotFound
from coalmine.core.histogram import VersionMetrics
from coalmine.core.machine import Hook, HookResult, Tick
from coalmine.core.model import Phase
from coalmine.core.ports import (
    AlarmSource,
    HookRunner,
    Leadership,
    MetricsProvider,
    ReleaseStore,
)
from coalmine.integrations.cloudwatch import CloudWatchAlarm
from coalmine.integrations.lambda_hooks import LambdaHookRunner
from coalmine.integrations.prometheus import PrometheusAlarm
from coalmine.metrics.recorder import MetricWindow
from coalmine.store.db import open_store
from tests.aws import REGION, aws_environment
from tests.aws.hook_functions import hook_functions
from tests.controller import T0, FakeClock, HttpServer, start_release
from tests.services import fresh_pg_database

STORES = ["sqlite", "postgresql", "memory"]


@pytest.fixture
def plane(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> Iterator[ControlPlane]:
    """A control plane on the store named by the test's ``kind`` (memory: on SQLite, to seed)."""
    kind = request.getfixturevalue("kind")
    if kind == "postgresql":
        with fresh_pg_database() as url:
            store = open_store(url)
            yield ControlPlane(store, clock=clock)
            store.dispose()
        return
    store = open_store(f"sqlite:///{tmp_path / 'coalmine.db'}")
    yield ControlPlane(store, clock=clock)
    store.dispose()


# -- ReleaseStore ---------------------------------------------------------------------


@pytest.fixture(params=STORES)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def releases(kind: str, plane: ControlPlane, clock: FakeClock) -> tuple[ReleaseStore, str]:
    """A store holding one new release of cart and pay v2 (10% for a minute, then 100%)."""
    rid = start_release(plane, "10%:1m, 100%").id
    if kind == "memory":
        return MemoryReleaseStore([plane.releases.get(rid)], clock=clock), rid
    return plane.releases, rid


def test_a_new_release_is_due_at_once_and_not_before(releases: tuple[ReleaseStore, str]) -> None:
    store, rid = releases
    assert store.due(T0 - 1) == []
    assert store.due(T0) == [rid]
    assert store.next_due_at() == T0


def test_a_tick_takes_one_step_once(releases: tuple[ReleaseStore, str], clock: FakeClock) -> None:
    store, rid = releases
    done = store.advance(rid, Tick(T0))
    assert done is not None
    assert (done.release.phase, done.release.exposure, done.release.step) == (
        Phase.RUNNING,
        1000,
        0,
    )
    assert done.release.started_at == T0
    assert done.release.next_action_at == T0 + 60
    assert store.advance(rid, Tick(T0)) is None, "ticking twice at one time changes nothing"
    assert store.due(T0 + 59) == []
    assert store.next_due_at() == T0 + 60


def test_the_steps_run_out_into_a_promotion(
    releases: tuple[ReleaseStore, str], clock: FakeClock
) -> None:
    store, rid = releases
    store.advance(rid, Tick(T0))
    clock.advance(60)
    kinds = []
    while (done := store.advance(rid, Tick(clock()))) is not None:
        kinds.append(done.transition.kind)
    assert kinds == ["step", "promoting", "promoted"]
    assert store.due(clock() + 3600) == []
    assert store.next_due_at() is None


def test_a_hook_result_nobody_waits_for_changes_nothing(
    releases: tuple[ReleaseStore, str],
) -> None:
    store, rid = releases
    store.advance(rid, Tick(T0))  # running: no hook is awaited any more
    assert store.advance(rid, HookResult(Hook.BEFORE_ALLOW_TRAFFIC, True, T0)) is None
    assert store.advance(rid, HookResult(Hook.AFTER_ALLOW_TRAFFIC, False, T0)) is None


def test_an_unknown_release_is_not_found(releases: tuple[ReleaseStore, str]) -> None:
    store, _ = releases
    with pytest.raises(NotFound, match="no release with id 'shop-99'"):
        store.advance("shop-99", Tick(T0))


# -- MetricsProvider ------------------------------------------------------------------

Adder = Callable[[float, str, str, str, int, list[float]], None]


@pytest.fixture
def metrics(kind: str, plane: ControlPlane) -> tuple[MetricsProvider, Adder]:
    """A provider and a way to add one window (start, function, version, channel, ...)."""
    start_release(plane, "10%:1m, 100%")
    memory = MemoryMetrics()

    def add(
        start: float,
        function: str,
        version: str,
        channel: str,
        errors: int,
        latencies_ms: list[float],
    ) -> None:
        m = VersionMetrics("shop", function, version, channel)  # type: ignore[arg-type]
        for i, value in enumerate(latencies_ms):
            m.record(value, error=i < errors)
        if kind == "memory":
            memory.add(start, m)
            return
        batch = MetricsBatch.model_validate(
            {"app": "shop", "window": 10, "windows": [MetricWindow(start, m).to_dict()]}
        )
        plane.metrics.ingest("shop", batch, "test")

    return (memory if kind == "memory" else plane.metrics), add


def test_no_windows_are_empty_metrics(metrics: tuple[MetricsProvider, Adder]) -> None:
    provider, _ = metrics
    got = provider.metrics_for("shop", "cart", "v2", "canary", since=0)
    assert (got.requests, got.errors, got.histogram.count) == (0, 0, 0)


def test_windows_in_the_range_add_up_and_nothing_else_does(
    metrics: tuple[MetricsProvider, Adder],
) -> None:
    provider, add = metrics
    add(T0, "cart", "v2", "canary", 1, [10.0, 20.0, 30.0])
    add(T0 + 10, "cart", "v2", "canary", 0, [40.0, 50.0])
    add(T0 + 20, "cart", "v2", "canary", 5, [500.0] * 5)  # outside [since, until)
    add(T0, "cart", "v2", "stable", 0, [10.0] * 7)  # the other channel
    add(T0, "cart", "v1", "canary", 0, [10.0] * 7)  # another version
    add(T0 - 10, "cart", "v2", "canary", 9, [900.0] * 9)  # before since
    got = provider.metrics_for("shop", "cart", "v2", "canary", since=T0, until=T0 + 20)
    assert (got.requests, got.errors, got.histogram.count) == (5, 1, 5)
    assert got.histogram.quantile(1.0) == pytest.approx(50.0, rel=0.02)
    everything = provider.metrics_for("shop", "cart", "v2", "canary", since=T0)
    assert (everything.requests, everything.errors) == (10, 6)
    queries = [("cart", "v2", "canary"), ("cart", "v2", "stable"), ("pay", "v2", "canary")]
    many = provider.metrics_for_many("shop", queries, since=T0, until=T0 + 20)
    each = [provider.metrics_for("shop", *q, since=T0, until=T0 + 20) for q in queries]
    assert [m.to_dict() for m in many] == [m.to_dict() for m in each]
    assert [(m.requests, m.errors) for m in many] == [(5, 1), (7, 0), (0, 0)]


def test_a_bad_channel_is_invalid_input(metrics: tuple[MetricsProvider, Adder]) -> None:
    provider, _ = metrics
    with pytest.raises(InvalidInput):
        provider.metrics_for("shop", "cart", "v2", "blue", since=0)


# -- AlarmSource ----------------------------------------------------------------------


def _prometheus(value: float) -> PrometheusAlarm:
    def answer(request: httpx.Request) -> httpx.Response:
        result = [{"metric": {"job": "shop"}, "value": [T0, str(value)]}]
        body = {"status": "success", "data": {"resultType": "vector", "result": result}}
        return httpx.Response(200, content=json.dumps(body))

    return PrometheusAlarm(
        name="p99",
        url="http://127.0.0.1:9090",
        query="shop_p99_seconds",
        above=0.5,
        transport=httpx.MockTransport(answer),
    )


def _cloudwatch(firing: bool) -> CloudWatchAlarm:
    """A CloudWatch alarm on moto (the test runs inside `_aws`)."""
    import boto3

    cw = boto3.client("cloudwatch", region_name=REGION)
    cw.put_metric_alarm(
        AlarmName="shop-p99",
        Namespace="coalmine",
        MetricName="latency",
        Statistic="Average",
        Period=60,
        EvaluationPeriods=1,
        Threshold=500,
        ComparisonOperator="GreaterThanThreshold",
    )
    if firing:
        cw.set_alarm_state(AlarmName="shop-p99", StateValue="ALARM", StateReason="p99 > 500")
    return CloudWatchAlarm.from_spec({"name": "p99", "cloudwatch": "shop-p99"})


def _aws() -> AbstractContextManager[object]:
    moto = pytest.importorskip("moto")
    stack = ExitStack()
    stack.enter_context(aws_environment())
    stack.enter_context(moto.mock_aws())
    return stack


ALARMS: dict[str, Callable[[bool], AlarmSource]] = {
    "prometheus": lambda firing: _prometheus(0.9 if firing else 0.1),
    "scripted": lambda firing: ScriptedAlarm(
        "p99", EvaluationState.FIRING if firing else EvaluationState.OK
    ),
    "cloudwatch": _cloudwatch,
}


@pytest.mark.parametrize("source_kind", list(ALARMS))
@pytest.mark.parametrize("firing", [True, False], ids=["firing", "ok"])
def test_an_alarm_source_says_its_state_with_its_name(source_kind: str, firing: bool) -> None:
    with _aws() if source_kind == "cloudwatch" else nullcontext():
        source = ALARMS[source_kind](firing)
        assert isinstance(source, AlarmSource)
        assert source.name == "p99"
        for at in (None, time.time()):  # now, and at a time (after the state was set)
            got = source.evaluate(at=at)
            assert got.name == "p99"
            assert got.state is (EvaluationState.FIRING if firing else EvaluationState.OK)
            assert got.detail
            assert {"name", "state", "detail", "value"} <= set(got.to_dict())


# -- HookRunner -----------------------------------------------------------------------


@pytest.fixture(params=["http", "lambda", "dispatch", "callable"])
def hook_runner(
    request: pytest.FixtureRequest, http_server: HttpServer
) -> Iterator[tuple[HookRunner, Callable[[bool], HookSpec]]]:
    """A runner and a hook spec that passes (True) or fails (False) under it."""
    if request.param == "http":
        ok, bad = http_server.route("/ok", 200), http_server.route("/bad", 500)
        with HttpHookRunner(sleep=lambda _s: None) as runner:
            yield runner, lambda passes: HookSpec(url=ok if passes else bad, retries=1)
        return
    if request.param in ("lambda", "dispatch"):  # real functions, local Invoke endpoint
        with hook_functions():
            lambda_runner = LambdaHookRunner(payload=hook_payload, sleep=lambda _s: None)
            runner: Any = lambda_runner
            if request.param == "dispatch":
                runner = HookDispatcher(lambda_=lambda_runner)
            yield (
                runner,
                lambda passes: HookSpec.model_validate(
                    {"lambda": "check-passes" if passes else "check-raises", "retries": 1}
                ),
            )
            lambda_runner.close()
        return
    yield (
        CallableHookRunner(lambda _r, _h, spec: spec.where.endswith("/ok")),
        lambda passes: HookSpec(
            url="http://127.0.0.1:9/ok" if passes else "http://127.0.0.1:9/bad"
        ),
    )


@pytest.mark.parametrize("passes", [True, False], ids=["passes", "fails"])
def test_a_hook_runner_reports_and_never_raises(
    hook_runner: tuple[HookRunner, Callable[[bool], HookSpec]], plane_release: Any, passes: bool
) -> None:
    runner, spec_for = hook_runner
    spec = spec_for(passes).config()
    outcome = runner.run(plane_release, Hook.BEFORE_ALLOW_TRAFFIC, spec)
    assert outcome.passed is passes
    assert outcome.detail.startswith(f"before_allow_traffic hook {spec.where} ")


@pytest.fixture
def plane_release(tmp_path: Path, clock: FakeClock) -> Iterator[Any]:
    store = open_store(f"sqlite:///{tmp_path / 'hooks.db'}")
    yield start_release(ControlPlane(store, clock=clock), "AllAtOnce")
    store.dispose()


# -- Leadership -----------------------------------------------------------------------


@pytest.fixture(params=["sole", "file-lock", "pg-advisory"])
def leadership(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Leadership]:
    if request.param == "sole":
        yield SoleLeadership()
    elif request.param == "file-lock":
        yield FileLockLeadership(tmp_path / "leader.lock")
    else:
        with fresh_pg_database() as url:
            lead = PgAdvisoryLeadership(url, key=hash(str(tmp_path)) & 0x7FFF_FFFF)
            yield lead
            lead.release()


def test_leadership_is_taken_held_and_given_up(leadership: Leadership) -> None:
    assert not leadership.held
    assert leadership.try_acquire()
    assert leadership.held
    assert leadership.try_acquire(), "asking again while holding it keeps it"
    leadership.release()
    assert not leadership.held
    leadership.release()  # idempotent
    assert leadership.try_acquire()
    leadership.release()
