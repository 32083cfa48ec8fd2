"""Lambda hooks in the loop: the controller's `HookDispatcher` invokes real hook functions
behind the local Invoke endpoint; a failing one rolls the release back with the function's
message in the event, a passing one lets it promote. Lambda hooks are stored and read
back as the API gives them, beside URL hooks stored before they existed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from coalmine.controller.hooks import HookDispatcher
from coalmine.controller.leader import SoleLeadership
from coalmine.controller.loop import Controller
from coalmine.controller.plane import ControlPlane
from coalmine.controller.schemas import REDACTED, HookSpec, ReleaseRead
from coalmine.core.machine import Hook
from coalmine.integrations.lambda_local import LocalLambda
from tests.aws.hook_functions import hook_functions
from tests.controller import APP, FakeClock, HttpServer, start_release, tick_through_hooks


@pytest.fixture(scope="module")
def endpoint() -> Iterator[LocalLambda]:
    with hook_functions() as local:
        yield local


@pytest.mark.parametrize(
    ("function", "reason"),
    [
        ("check-fails", "answered Failed: smoke test of cart v2: 3 of 20 orders failed"),
        ("check-raises", "failed (RuntimeError: cannot reach the orders table"),
    ],
    ids=["answers-failed", "raises"],
)
def test_a_failing_lambda_before_allow_traffic_hook_rolls_back_with_its_message(
    svc: ControlPlane, clock: FakeClock, endpoint: LocalLambda, function: str, reason: str
) -> None:
    spec = HookSpec.model_validate({"lambda": function, "timeout": 5, "retries": 1})
    release = start_release(svc, "10%:0s, 100%", {"before_allow_traffic": spec})
    with HookDispatcher() as hooks:
        ticks = tick_through_hooks(
            Controller(svc, leadership=SoleLeadership(), hooks=hooks, clock=clock)
        )
    assert ticks == 3
    done = svc.releases.get(release.id)
    assert done.phase == "rolled_back"
    assert done.reason is not None
    assert done.reason.startswith(
        f"before_allow_traffic hook failed: before_allow_traffic hook lambda {function} {reason}"
    )
    events = svc.audit.events(release_id=release.id)
    assert [e.kind for e in events] == ["created", "hook_started", "rolling_back", "rolled_back"]
    assert events[2].data == {"reason": done.reason}
    assert all(e.exposure == 0 for e in events), "no user saw the candidate"
    app = svc.catalog.get_app(APP)
    assert {f.name: f.current_version for f in app.functions} == {"cart": "v1", "pay": "v1"}


def test_a_lambda_and_a_url_hook_that_pass_let_the_release_promote(
    svc: ControlPlane, clock: FakeClock, endpoint: LocalLambda, http_server: HttpServer
) -> None:
    url = http_server.route("/after", 204)
    hooks = {
        "before_allow_traffic": HookSpec.model_validate({"lambda": "check-passes:live"}),
        "after_allow_traffic": HookSpec(url=url),
    }
    release = start_release(svc, "10%:0s, 100%", hooks)
    with HookDispatcher() as runner:
        tick_through_hooks(Controller(svc, leadership=SoleLeadership(), hooks=runner, clock=clock))
    done = svc.releases.get(release.id)
    assert done.phase == "promoted"
    assert [c.body["hook"] for c in http_server.at("/after")] == ["after_allow_traffic"]


def test_lambda_hooks_are_stored_and_read_back_as_given(svc: ControlPlane) -> None:
    lambda_spec = {"lambda": "arn:aws:lambda:us-east-1:123456789012:function:check:7"}
    hooks = {
        "before_allow_traffic": HookSpec.model_validate({**lambda_spec, "retries": 0}),
        "after_allow_traffic": HookSpec(url="https://ci.example/check", headers={"x-k": "v"}),
    }
    release = start_release(svc, "AllAtOnce", hooks)
    stored = svc.releases.get(release.id)
    assert stored.hooks[Hook.BEFORE_ALLOW_TRAFFIC].lambda_function == lambda_spec["lambda"]
    assert stored.hooks[Hook.BEFORE_ALLOW_TRAFFIC].url is None
    assert ReleaseRead.of(stored).model_dump(mode="json")["hooks"] == {
        "before_allow_traffic": {**lambda_spec, "timeout": 10.0, "retries": 0, "headers": {}},
        "after_allow_traffic": {
            "url": "https://ci.example/check",
            "timeout": 10.0,
            "retries": 2,
            "headers": {"x-k": REDACTED},
        },
    }
    assert stored.hooks[Hook.AFTER_ALLOW_TRAFFIC].headers == {"x-k": "v"}, "kept for use"
