"""Keeping the Lambda alias true: the controller, the real store and Lambda on moto.

An app ``food`` has functions whose versions are published versions 1 and 2
of Lambda functions with an alias ``live`` on version 1, and
``release.lambda_alias: live``. Request mode shifts the alias's weights per
step and resets them on rollback; user mode leaves the alias on version 1
while the release runs and moves it once promoting, before the release is
reported promoted; a call that keeps failing pauses the release with AWS's
error in its reason. Retries sleep through a recorded function: no test waits.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from coalmine.controller.alias import AliasKeeper
from coalmine.controller.leader import SoleLeadership
from coalmine.controller.loop import Controller
from coalmine.controller.memory import CallableHookRunner, MemoryLambdaAliases
from coalmine.controller.plane import ControlPlane
from coalmine.controller.schemas import (
    AppSpec,
    FunctionSpec,
    HookSpec,
    ReleaseCreate,
    ReleaseSettings,
)
from coalmine.core.alias import AliasRouting
from coalmine.core.machine import Command
from coalmine.core.ports import LambdaAliases
from coalmine.core.records import EventRecord, ReleaseRecord
from coalmine.integrations.lambda_alias import Boto3LambdaAliases
from coalmine.store.db import open_store
from tests.aws import ACCOUNT, REGION
from tests.aws.lambda_aliases import Sent, alias_of, mocked_lambda, publish
from tests.controller import ACTOR, ANALYSIS_OFF, FakeClock, NoHooks, tick_through_hooks

APP = "food"
FUNCTIONS = ("place-order", "ship-order")


def arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


@dataclass
class Sleeps:
    """The retries' sleep and monotonic clock: each sleep moves the clock, nothing waits."""

    now: float = 0.0
    slept: list[float] = field(default_factory=list)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def plane(sqlite_url: str, clock: FakeClock) -> Iterator[ControlPlane]:
    store = open_store(sqlite_url)
    yield ControlPlane(store, clock=clock)
    store.dispose()


@pytest.fixture
def aws() -> Iterator[Any]:
    with mocked_lambda() as client:
        for name in FUNCTIONS:
            publish(client, name, versions=2)
        yield client


def lambda_twin() -> MemoryLambdaAliases:
    """Lambda in memory: each function with versions 1 and 2, and ``live`` on 1."""
    twin = MemoryLambdaAliases()
    for name in FUNCTIONS:
        twin.publish(arn(name), "1", "2")
        twin.create_alias(arn(name), "live", "1")
    return twin


def alias(client: Any, name: str) -> AliasRouting:
    return alias_of(client, name)


def aliases(client: Any) -> dict[str, AliasRouting]:
    return {name: alias(client, name) for name in FUNCTIONS}


def everywhere(routing: AliasRouting) -> dict[str, AliasRouting]:
    return dict.fromkeys(FUNCTIONS, routing)


def apply(plane: ControlPlane, route_mode: str, *, lambda_alias: str | None = "live") -> None:
    plane.catalog.apply(
        AppSpec(
            app=APP,
            functions={
                name: FunctionSpec(
                    versions={"1": f"{arn(name)}:1", "2": f"{arn(name)}:2"}, current="1"
                )
                for name in FUNCTIONS
            },
            release=ReleaseSettings(
                route_mode=route_mode,  # type: ignore[arg-type]
                lambda_alias=lambda_alias,
            ),
        ),
        ACTOR,
    )


def start(
    plane: ControlPlane,
    route_mode: str,
    strategy: str = "10%:1m, 50%:1m, 100%",
    hooks: dict[str, HookSpec] | None = None,
) -> ReleaseRecord:
    apply(plane, route_mode)
    return plane.releases.start(
        APP,
        ReleaseCreate.model_validate(
            {
                "candidate": dict.fromkeys(FUNCTIONS, "2"),
                "strategy": strategy,
                "hooks": hooks or {},
                "analysis": ANALYSIS_OFF,
            }
        ),
        ACTOR,
    )


def controller(
    plane: ControlPlane,
    clock: FakeClock,
    sleeps: Sleeps,
    adapter: LambdaAliases | None = None,
    **kw: Any,
) -> Controller:
    keeper = AliasKeeper(
        plane,
        adapter if adapter is not None else Boto3LambdaAliases(),
        sleep=sleeps.sleep,
        monotonic=sleeps.monotonic,
    )
    return Controller(
        plane,
        leadership=SoleLeadership(),
        hooks=kw.pop("hooks", NoHooks()),
        clock=clock,
        aliases=keeper,
        **kw,
    )


def events(plane: ControlPlane, release_id: str) -> list[EventRecord]:
    return plane.audit.events(release_id=release_id, limit=1000)


def kinds(plane: ControlPlane, release_id: str) -> list[str]:
    return [e.kind for e in events(plane, release_id)]


def alias_events(plane: ControlPlane, release_id: str) -> list[tuple[str, str, dict[str, float]]]:
    """(function, version, weights) of every alias move, in order."""
    return [
        (e.data["function"], e.data["version"], e.data["weights"])
        for e in events(plane, release_id)
        if e.kind == "alias"
    ]


# -- request mode: what CodeDeploy does ---------------------------------------------------


def test_request_mode_shifts_the_weights_per_step_and_resets_them_on_rollback(
    plane: ControlPlane, clock: FakeClock, aws: Any
) -> None:
    release = start(plane, "request")
    assert release.lambda_alias == "live"
    ctl = controller(plane, clock, sleeps := Sleeps())

    ctl.tick()
    assert plane.releases.get(release.id).exposure == 1000
    assert aliases(aws) == everywhere(AliasRouting("1", {"2": 0.1}))
    clock.advance(60)
    ctl.tick()
    assert aliases(aws) == everywhere(AliasRouting("1", {"2": 0.5}))

    plane.releases.operate(release.id, Command.ROLLBACK, ACTOR, "error rate")
    ctl.tick()
    assert plane.releases.get(release.id).phase == "rolled_back"
    assert aliases(aws) == everywhere(AliasRouting("1")), "reset: no weights, on version 1"
    assert alias_events(plane, release.id) == [
        ("place-order", "1", {"2": 0.1}),
        ("ship-order", "1", {"2": 0.1}),
        ("place-order", "1", {"2": 0.5}),
        ("ship-order", "1", {"2": 0.5}),
        ("place-order", "1", {}),
        ("ship-order", "1", {}),
    ]
    moved = next(e for e in events(plane, release.id) if e.kind == "alias")
    assert moved.message == (
        "Lambda alias live of place-order: version 1 -> version 1, 10% to version 2"
    )
    assert moved.data == {
        "alias": "live",
        "function": "place-order",
        "lambda_function": arn("place-order"),
        "version": "1",
        "weights": {"2": 0.1},
        "previous": {"version": "1", "weights": {}},
    }
    assert sleeps.slept == [], "nothing failed, nothing was retried"


def test_request_mode_ends_on_the_candidate_when_promoted(
    plane: ControlPlane, clock: FakeClock, aws: Any
) -> None:
    release = start(plane, "request", "10%:1m, 100%")
    ctl = controller(plane, clock, Sleeps())
    ctl.tick()
    clock.advance(60)
    ctl.tick()
    assert plane.releases.get(release.id).phase == "promoted"
    assert aliases(aws) == everywhere(AliasRouting("2"))
    # the 100% step already put the alias on version 2 alone: promoting moved nothing
    assert [v for _, v, _ in alias_events(plane, release.id)] == ["1", "1", "2", "2"]


# -- user mode: coalmine routes the users ---------------------------------------------------


def test_user_mode_keeps_the_alias_on_stable_and_moves_it_when_promoted(
    plane: ControlPlane, clock: FakeClock, aws: Any
) -> None:
    release = start(plane, "user")
    ctl = controller(plane, clock, Sleeps())
    for _ in range(2):
        ctl.tick()
        assert aliases(aws) == everywhere(AliasRouting("1"))
        clock.advance(60)
    ctl.tick()  # 100%: everyone is canary through coalmine; then promoting, promoted
    assert plane.releases.get(release.id).phase == "promoted"
    assert aliases(aws) == everywhere(AliasRouting("2"))
    assert alias_events(plane, release.id) == [
        ("place-order", "2", {}),
        ("ship-order", "2", {}),
    ]
    order = kinds(plane, release.id)
    assert order.index("promoting") < order.index("alias") < order.index("promoted"), (
        "the aliases moved before the promotion was reported"
    )


def test_the_after_hook_runs_once_the_alias_is_on_the_candidate(
    plane: ControlPlane, clock: FakeClock, aws: Any
) -> None:
    seen: list[AliasRouting] = []

    def check(*_: object) -> bool:
        seen.append(alias(aws, "place-order"))
        return True

    hooks = {"after_allow_traffic": HookSpec(url="http://127.0.0.1:9/after")}
    release = start(plane, "user", "10%:0s, 100%", hooks)
    tick_through_hooks(controller(plane, clock, Sleeps(), hooks=CallableHookRunner(check)))
    assert plane.releases.get(release.id).phase == "promoted"
    assert seen == [AliasRouting("2")], "as CodeDeploy: AfterAllowTraffic sees the new version"


def test_a_user_mode_rollback_never_touches_the_alias(
    plane: ControlPlane, clock: FakeClock, aws: Any
) -> None:
    release = start(plane, "user")
    calls = Sent("UpdateAlias")
    ctl = controller(plane, clock, Sleeps(), Boto3LambdaAliases(session=calls.session))
    ctl.tick()
    clock.advance(60)
    ctl.tick()
    plane.releases.operate(release.id, Command.ROLLBACK, ACTOR, "p99 latency")
    ctl.tick()
    assert plane.releases.get(release.id).phase == "rolled_back"
    assert aliases(aws) == everywhere(AliasRouting("1"))
    assert calls.urls == [], "the alias never left version 1: no UpdateAlias at all"
    assert "alias" not in kinds(plane, release.id)


def test_an_app_without_lambda_alias_keeps_none(
    plane: ControlPlane, clock: FakeClock, aws: Any
) -> None:
    apply(plane, "request", lambda_alias=None)
    release = plane.releases.start(
        APP, ReleaseCreate(candidate=dict.fromkeys(FUNCTIONS, "2"), strategy="10%:1m, 100%"), ACTOR
    )
    assert release.lambda_alias is None
    twin = MemoryLambdaAliases()
    controller(plane, clock, Sleeps(), twin).tick()
    assert plane.releases.get(release.id).exposure == 1000
    assert twin.calls == []
    assert aliases(aws) == everywhere(AliasRouting("1"))


def test_the_alias_is_copied_onto_the_release_when_it_starts(plane: ControlPlane) -> None:
    release = start(plane, "user")
    apply(plane, "user", lambda_alias="other")  # the app's default changes mid-release
    assert plane.releases.get(release.id).lambda_alias == "live"


# -- failures: retried, then the release pauses ------------------------------------------


def test_a_missing_alias_is_retried_then_pauses_the_release_with_aws_s_error(
    plane: ControlPlane, clock: FakeClock, aws: Any
) -> None:
    aws.delete_alias(FunctionName="ship-order", Name="live")
    release = start(plane, "request")
    ctl = controller(plane, clock, sleeps := Sleeps())
    ctl.tick()

    paused = plane.releases.get(release.id)
    assert paused.phase == "paused"
    assert paused.reason is not None
    assert paused.reason.startswith(
        f"Lambda alias live of ship-order ({arn('ship-order')}) could not be set to"
        " version 1, 10% to version 2: GetAlias failed after 3 attempts:"
        " ResourceNotFoundException: "
    )
    assert sleeps.slept == [0.5, 1.0], "three attempts, with a doubling pause"
    [failed] = [e for e in events(plane, release.id) if e.kind == "alias_failed"]
    assert failed.message.endswith("; changed: place-order; not changed: ship-order")
    assert failed.data["changed"] == ["place-order"]
    assert failed.data["not_changed"] == ["ship-order"]
    assert "ResourceNotFoundException" in failed.data["error"]
    assert kinds(plane, release.id)[-3:] == ["alias", "alias_failed", "paused"]
    assert alias(aws, "place-order") == AliasRouting("1", {"2": 0.1})

    # paused, the release does not move, and its unchanged state is not tried again at once
    clock.advance(3600)
    assert ctl.tick() == 0
    assert sleeps.slept == [0.5, 1.0]


def test_a_call_that_fails_twice_then_passes_moves_the_alias(
    plane: ControlPlane, clock: FakeClock
) -> None:
    twin = lambda_twin()
    release = start(plane, "request")
    twin.fail_next(2)
    ctl = controller(plane, clock, sleeps := Sleeps(), twin)
    ctl.tick()
    assert plane.releases.get(release.id).phase == "running"
    assert sleeps.slept == [0.5, 1.0]
    for name in FUNCTIONS:
        assert twin.get(name, "live") == AliasRouting("1", {"2": 0.1})
    assert "alias_failed" not in kinds(plane, release.id)


def test_an_alias_that_will_not_move_holds_the_promotion_and_pauses_it(
    plane: ControlPlane, clock: FakeClock
) -> None:
    twin = lambda_twin()
    release = start(plane, "user", "10%:1m, 100%")
    ctl = controller(plane, clock, sleeps := Sleeps(), twin)
    ctl.tick()
    clock.advance(60)
    twin.fail_next(3, "AccessDeniedException: not authorized to perform lambda:GetAlias")
    ctl.tick()

    paused = plane.releases.get(release.id)
    assert (paused.phase, paused.exposure, paused.step) == ("paused", 10000, 1)
    assert paused.reason is not None
    assert "AccessDeniedException: not authorized to perform lambda:GetAlias" in paused.reason
    assert "promoted" not in kinds(plane, release.id), "never reported promoted"
    assert twin.get("place-order", "live") == AliasRouting("1")
    assert sleeps.slept == [0.5, 1.0]

    # the permission is granted; an operator resumes: the alias moves, then it is promoted
    plane.releases.operate(release.id, Command.RESUME, ACTOR)
    ctl.tick()
    assert plane.releases.get(release.id).phase == "promoted"
    assert {name: twin.get(name, "live") for name in FUNCTIONS} == everywhere(AliasRouting("2"))
    after = kinds(plane, release.id)
    assert after[after.index("resumed") :] == [
        "resumed",
        "promoting",
        "alias",
        "alias",
        "promoted",
    ]


def test_a_promoting_release_whose_alias_did_not_move_is_never_promoted(
    plane: ControlPlane, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even when it cannot be paused (another writer keeps changing it first), a promoting
    release waits for its aliases: the loop does not promote it until they moved."""
    twin = lambda_twin()
    release = start(plane, "user")
    monkeypatch.setattr(plane.releases, "command", lambda *_a, **_k: False)
    sleeps = Sleeps()
    keeper = AliasKeeper(plane, twin, attempts=1, sleep=sleeps.sleep, monotonic=sleeps.monotonic)
    ctl = Controller(
        plane, leadership=SoleLeadership(), hooks=NoHooks(), clock=clock, aliases=keeper
    )
    plane.releases.operate(release.id, Command.PROMOTE, ACTOR, "ship it")
    twin.fail_next(1)
    assert ctl.tick() == 0
    assert plane.releases.get(release.id).phase == "promoting"
    assert not keeper.ready(release.id)
    clock.advance(5)
    assert ctl.tick() == 0, "held: its aliases did not move"
    assert plane.releases.get(release.id).phase == "promoting"

    sleeps.now += 60  # retried after retry_after: Lambda answers now
    assert ctl.tick() == 1
    assert plane.releases.get(release.id).phase == "promoted"
    assert twin.get("place-order", "live") == AliasRouting("2")


def test_a_rollback_completes_even_when_the_alias_cannot_be_reset_and_is_retried(
    plane: ControlPlane, clock: FakeClock
) -> None:
    twin = lambda_twin()
    release = start(plane, "request")
    sleeps = Sleeps()
    ctl = controller(plane, clock, sleeps, twin)
    ctl.tick()
    plane.releases.operate(release.id, Command.ROLLBACK, ACTOR, "alarm")
    # three attempts at rolling_back, three at rolled_back: then Lambda answers again
    twin.fail_next(6, "ServiceException: Lambda is unavailable")
    ctl.tick()
    assert plane.releases.get(release.id).phase == "rolled_back", "rollback wins"
    failed = [e for e in events(plane, release.id) if e.kind == "alias_failed"]
    assert [e.phase for e in failed] == ["rolling_back", "rolled_back"]
    assert "ServiceException: Lambda is unavailable" in failed[-1].message
    assert failed[-1].data["not_changed"] == list(FUNCTIONS)

    # the keeper resets the alias of the ended release, after retry_after
    ctl.tick()
    assert twin.get("place-order", "live") == AliasRouting("1", {"2": 0.1}), "not yet"
    sleeps.now += 60
    ctl.tick()
    assert {name: twin.get(name, "live") for name in FUNCTIONS} == everywhere(AliasRouting("1"))


def test_retries_stop_within_the_budget(plane: ControlPlane, clock: FakeClock) -> None:
    twin = lambda_twin()
    release = start(plane, "request")
    sleeps = Sleeps()
    keeper = AliasKeeper(
        plane,
        twin,
        attempts=10,
        backoff=1.0,
        budget=5.0,
        sleep=sleeps.sleep,
        monotonic=sleeps.monotonic,
    )
    twin.fail_next(100)
    ctl = Controller(
        plane, leadership=SoleLeadership(), hooks=NoHooks(), clock=clock, aliases=keeper
    )
    ctl.tick()
    assert sleeps.slept == [1.0, 2.0], "a third pause (4 s) would pass the 5 s budget"
    reason = plane.releases.get(release.id).reason
    assert reason is not None
    assert "GetAlias failed after 3 attempts: ThrottlingException: Rate exceeded" in reason


# -- idempotence: the record says what the alias should be -----------------------------------


def test_a_restarted_controller_re_applies_the_alias_and_writes_only_what_differs(
    plane: ControlPlane, clock: FakeClock, aws: Any
) -> None:
    release = start(plane, "request")
    controller(plane, clock, Sleeps()).tick()
    assert aliases(aws) == everywhere(AliasRouting("1", {"2": 0.1}))
    # the controller died after its step committed, before it moved one alias
    aws.update_alias(
        FunctionName="ship-order",
        Name="live",
        FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {}},
    )
    calls = Sent("UpdateAlias")
    restarted = controller(plane, clock, Sleeps(), Boto3LambdaAliases(session=calls.session))
    assert restarted.tick() == 0, "no step is due: only the alias is put right"
    assert aliases(aws) == everywhere(AliasRouting("1", {"2": 0.1}))
    assert len(calls.urls) == 1, "place-order was right already: only ship-order is written"
    assert restarted.tick() == 0
    assert len(calls.urls) == 1, "nothing changed: no call at all"
    assert alias_events(plane, release.id)[-1] == ("ship-order", "1", {"2": 0.1})


def test_functions_an_alias_cannot_route_are_reported_once(
    plane: ControlPlane, clock: FakeClock
) -> None:
    plane.catalog.apply(
        AppSpec(
            app=APP,
            functions={
                "cart": FunctionSpec(
                    versions={"1": "shop.cart:handler", "2": "shop.cart:handler_v2"}, current="1"
                ),
            },
            release=ReleaseSettings(lambda_alias="live"),
        ),
        ACTOR,
    )
    release = plane.releases.start(
        APP, ReleaseCreate(candidate={"cart": "2"}, strategy="10%:1m, 100%"), ACTOR
    )
    twin = MemoryLambdaAliases()
    ctl = controller(plane, clock, Sleeps(), twin)
    ctl.tick()
    clock.advance(60)
    ctl.tick()
    assert plane.releases.get(release.id).phase == "promoted"
    [note] = [e for e in events(plane, release.id) if e.kind == "alias_skipped"]
    assert note.message == (
        "Lambda alias live is not kept for cart"
        " (cart: its baseline and candidate are not both Lambda versions)"
    )
    assert twin.calls == []
