"""From SAM and CodeDeploy to coalmine, end to end, on moto.

The food-ordering app's SAM template (examples/food_ordering/template.yaml:
two functions published under the alias ``live``, a canary preference, an
alarm and a pre-traffic hook) is imported with ``coalmine import sam``; the
document it writes is applied as it is, so both functions' published
versions are registered from AWS and each function starts from the version
its alias routes to. Then, with the real controller on a fake clock (also
moto's CloudWatch clock):

1. a user-mode release of ``latest-published`` runs to promotion: the alias
   stays on the stable version while coalmine routes users, and ends on the
   candidate;
2. the next version is rolled back by a CloudWatch alarm whose dimensions
   name the candidate version: the alias never leaves the stable version;
3. a request-mode release shifts the alias's weights step by step, as
   CodeDeploy would, and a rollback resets them.

No traffic flows here, so the judge has nothing to judge: the imported
analysis is told to go on through inconclusive intervals (the judge is tested
elsewhere; what this test follows is AWS's view of the release).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from coalmine.cli.app import app as cli
from coalmine.controller.hooks import HookDispatcher
from coalmine.controller.leader import SoleLeadership
from coalmine.controller.loop import Controller
from coalmine.controller.plane import ControlPlane
from coalmine.controller.schemas import AppSpec, ReleaseCreate
from coalmine.core.alias import AliasRouting
from coalmine.core.records import ReleaseRecord
from coalmine.store.db import open_store
from tests.aws import ACCOUNT, REGION, cloudwatch_clock
from tests.aws.lambda_aliases import alias_of, mocked_lambda, publish
from tests.aws.moto_lambda import aws_version_listing
from tests.controller import tick_through_hooks
from tests.helpers import FakeClock

boto3 = pytest.importorskip("boto3")

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "examples" / "food_ordering" / "template.yaml"
APP = "food-ordering"
PLACE, NOTIFY = "place-order-prod", "notify-user-prod"
ALARM = "food-ordering-canary-errors-prod"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    return cloudwatch_clock(monkeypatch)


@pytest.fixture
def aws() -> Iterator[Any]:
    """Lambda as SAM left it: two functions at versions 1 and 2, ``live`` on 1 (the stable
    version), and the pre-traffic hook function."""
    with mocked_lambda() as client, aws_version_listing():
        for name in (PLACE, NOTIFY):
            publish(client, name, versions=2)
            client.update_alias(FunctionName=name, Name="live", FunctionVersion="1")
        publish(client, "food-ordering-pre-traffic-prod", versions=1, alias=None)
        yield client


@pytest.fixture
def plane(tmp_path: Path, clock: FakeClock, aws: Any) -> Iterator[ControlPlane]:
    store = open_store(f"sqlite:///{tmp_path / 'coalmine.db'}")
    yield ControlPlane(store, clock=clock)
    store.dispose()


def imported() -> dict[str, Any]:
    """``coalmine import sam`` of the example template, as the document it writes."""
    result = CliRunner().invoke(
        cli, ["import", "sam", str(TEMPLATE), "--region", REGION, "--account", ACCOUNT]
    )
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = yaml.safe_load(result.stdout)
    return document


def live(aws: Any) -> dict[str, AliasRouting]:
    return {name: alias_of(aws, name) for name in (PLACE, NOTIFY)}


def drive(
    plane: ControlPlane,
    ctl: Controller,
    clock: FakeClock,
    release: ReleaseRecord,
    until: Callable[[ReleaseRecord], bool],
    *,
    each: Callable[[ReleaseRecord], None] = lambda r: None,
    ticks: int = 30,
) -> ReleaseRecord:
    """Tick a minute at a time until ``until`` holds; ``each`` checks every state seen."""
    for _ in range(ticks):
        tick_through_hooks(ctl)
        current = plane.releases.get(release.id)
        each(current)
        if until(current):
            return current
        clock.advance(60)
    raise AssertionError(f"{release.id} is still {plane.releases.get(release.id).phase}")


def start(plane: ControlPlane, candidate: dict[str, str], **settings: Any) -> ReleaseRecord:
    return plane.releases.start(
        APP, ReleaseCreate.model_validate({"candidate": candidate, **settings}), "ci"
    )


def test_a_sam_app_imported_released_and_rolled_back_with_the_alias_kept_true(
    aws: Any, plane: ControlPlane, clock: FakeClock
) -> None:
    document = imported()
    assert document["functions"] == {
        "place-order": {"versions": "published", "lambda_function": PLACE},
        "notify-user": {"versions": "published", "lambda_function": NOTIFY},
    }
    assert document["release"]["lambda_alias"] == "live"
    document["release"]["analysis"]["inconclusive"] = "continue"  # no traffic: see the docstring

    applied = plane.catalog.apply(AppSpec.model_validate(document), "ci")
    assert f"register place-order 2 -> arn:aws:lambda:{REGION}:{ACCOUNT}:function:{PLACE}:2" in (
        applied.changes
    )
    assert (
        f"set place-order current version 1 (alias live of {PLACE} routes to it)" in applied.changes
    )
    assert not plane.catalog.apply(AppSpec.model_validate(document), "ci").changed

    ctl = Controller(plane, leadership=SoleLeadership(), hooks=HookDispatcher(), clock=clock)
    cw = boto3.client("cloudwatch", region_name=REGION)

    # 1. user mode to promotion: AWS's alias stays on stable while coalmine routes users
    first = start(plane, {"place-order": "latest-published", "notify-user": "latest-published"})
    assert first.candidate == {"place-order": "2", "notify-user": "2"}
    assert first.hooks["before_allow_traffic"].lambda_function == "food-ordering-pre-traffic-prod"

    def stays_on_stable(r: ReleaseRecord) -> None:
        if r.phase == "running":
            assert live(aws) == dict.fromkeys((PLACE, NOTIFY), AliasRouting("1"))

    done = drive(plane, ctl, clock, first, lambda r: r.phase == "promoted", each=stays_on_stable)
    assert done.exposure == 10_000
    assert live(aws) == dict.fromkeys((PLACE, NOTIFY), AliasRouting("2"))
    kinds = [e.kind for e in plane.audit.events(release_id=first.id, limit=1000)]
    assert kinds.count("alias") == 2
    assert kinds.index("promoting") < kinds.index("alias") < kinds.index("promoted")

    # 2. a new version, rolled back by the imported alarm, whose dimensions name it
    publish_next(aws, PLACE)
    cw.put_metric_alarm(
        AlarmName=ALARM,
        Namespace="AWS/Lambda",
        MetricName="Errors",
        Dimensions=[
            {"Name": "FunctionName", "Value": PLACE},
            {"Name": "Resource", "Value": f"{PLACE}:3"},
        ],
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=0,
        ComparisonOperator="GreaterThanThreshold",
    )
    second = start(plane, {"place-order": "latest-published"})
    assert second.candidate["place-order"] == "3"
    drive(plane, ctl, clock, second, lambda r: r.phase == "running" and r.exposure == 1000)
    cw.set_alarm_state(AlarmName=ALARM, StateValue="ALARM", StateReason="Threshold Crossed")
    rolled = drive(plane, ctl, clock, second, lambda r: r.phase == "rolled_back")
    assert ALARM in (rolled.reason or "")
    assert live(aws)[PLACE] == AliasRouting("2"), "the alias never left the stable version"
    assert not [
        e for e in plane.audit.events(release_id=second.id, limit=1000) if e.kind == "alias"
    ], "user mode: a rollback had no alias to move back"

    # 3. request mode, as CodeDeploy shifts the alias: the weights move per step, then reset
    cw.set_alarm_state(AlarmName=ALARM, StateValue="OK", StateReason="fixed")
    clock.advance(60)
    third = start(
        plane,
        {"place-order": "3"},
        route_mode="request",
        strategy="10%:2m, 50%:2m, 100%",
    )
    weights: list[dict[str, float]] = []

    def record(r: ReleaseRecord) -> None:
        routing = live(aws)[PLACE]
        if not weights or weights[-1] != dict(routing.weights):
            weights.append(dict(routing.weights))

    drive(plane, ctl, clock, third, lambda r: r.exposure == 5000, each=record)
    assert weights == [{"3": 0.1}, {"3": 0.5}]
    assert live(aws)[PLACE].version == "2"
    plane.releases.rollback(third.id, "ci", "the on-call engineer saw enough")
    drive(plane, ctl, clock, third, lambda r: r.phase == "rolled_back")
    assert live(aws)[PLACE] == AliasRouting("2"), "reset: no weights, on the stable version"


def publish_next(client: Any, name: str) -> str:
    """Publish one more version of ``name`` (new code, as a SAM deploy does); its number."""
    from tests.aws.lambda_aliases import _zip

    client.update_function_code(FunctionName=name, ZipFile=_zip("'next'"))
    version: str = client.publish_version(FunctionName=name)["Version"]
    return version
