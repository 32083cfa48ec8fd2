"""CloudWatch alarms as an alarm source, on moto: DescribeAlarms states changing mid-release.

The controller runs on a fake clock that is also moto's CloudWatch clock, so
the alarms' ``StateUpdatedTimestamp`` and the release's ``created_at``
compare as they would in production, to the second the test chooses.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coalmine.controller.analysis_settings import parse_alarms, release_analysis
from coalmine.controller.leader import SoleLeadership
from coalmine.controller.loop import Controller
from coalmine.controller.plane import ControlPlane
from coalmine.controller.schemas import AppSpec, FunctionSpec, ReleaseCreate
from coalmine.core.alarms import EvaluationState
from coalmine.core.attribution import Blame
from coalmine.core.errors import InvalidInput
from coalmine.core.records import ReleaseRecord
from coalmine.integrations.cloudwatch import CloudWatchAlarm, CloudWatchAlarmReader
from coalmine.store.db import open_store
from tests.aws import ACCOUNT, REGION, aws_environment, cloudwatch_clock
from tests.controller import NoHooks
from tests.helpers import FakeClock

boto3 = pytest.importorskip("boto3")
moto = pytest.importorskip("moto")

APP = "food-ordering"
LAMBDA = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function"
INTERVAL = 10.0
CANDIDATE_ALARM = "place-order-v7-errors"
ALIAS_ALARM = "place-order-live-errors"


@pytest.fixture
def aws() -> Iterator[Any]:
    with aws_environment(), moto.mock_aws():
        yield boto3.client("cloudwatch", region_name=REGION)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    return cloudwatch_clock(monkeypatch)


@pytest.fixture
def plane(tmp_path: Path, clock: FakeClock) -> Iterator[ControlPlane]:
    store = open_store(f"sqlite:///{tmp_path / 'coalmine.db'}")
    yield ControlPlane(store, clock=clock)
    store.dispose()


def lambda_alarm(cw: Any, name: str, **dimensions: str) -> None:
    cw.put_metric_alarm(
        AlarmName=name,
        Namespace="AWS/Lambda",
        MetricName="Errors",
        Dimensions=[{"Name": k, "Value": v} for k, v in dimensions.items()],
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=0,
        ComparisonOperator="GreaterThanThreshold",
    )


def set_state(cw: Any, name: str, state: str, reason: str = "Threshold Crossed") -> None:
    cw.set_alarm_state(AlarmName=name, StateValue=state, StateReason=reason)


def start(plane: ControlPlane, alarms: list[dict[str, str]]) -> ReleaseRecord:
    """food-ordering: place-order v1 (Lambda version 6) -> v2 (7); notify-user unchanged."""
    plane.catalog.apply(
        AppSpec(
            app=APP,
            functions={
                "place-order": FunctionSpec(
                    versions={"v1": f"{LAMBDA}:place-order:6", "v2": f"{LAMBDA}:place-order:7"},
                    current="v1",
                ),
                "notify-user": FunctionSpec(
                    versions={"v1": f"{LAMBDA}:notify-user:3"}, current="v1"
                ),
            },
        ),
        "ci",
    )
    analysis = {
        "interval": "10s",
        "inconclusive": "continue",  # no traffic here: the judge is inconclusive, on purpose
        "max_inconclusive": 10_000,
        "alarms": alarms,
    }
    create = {"candidate": {"place-order": "v2"}, "strategy": "10%:1h, 100%", "analysis": analysis}
    return plane.releases.start(APP, ReleaseCreate.model_validate(create), "ci")


def controller(plane: ControlPlane, clock: FakeClock) -> Controller:
    return Controller(plane, leadership=SoleLeadership(), hooks=NoHooks(), clock=clock)


def interval(clock: FakeClock, ctl: Controller) -> None:
    clock.advance(INTERVAL)
    ctl.tick()


def alarm_events(plane: ControlPlane, release_id: str) -> list[str]:
    return [e.message for e in plane.audit.events(release_id=release_id) if e.kind == "alarm"]


BOTH = [
    {"name": "candidate-errors", "cloudwatch": CANDIDATE_ALARM},
    {"name": "alias-errors", "cloudwatch": ALIAS_ALARM},
]


def test_an_alias_wide_alarm_leaves_it_to_the_judge_a_candidate_alarm_rolls_back(
    aws: Any, plane: ControlPlane, clock: FakeClock
) -> None:
    lambda_alarm(aws, CANDIDATE_ALARM, FunctionName="place-order", Resource="place-order:7")
    lambda_alarm(aws, ALIAS_ALARM, FunctionName="place-order", Resource="place-order:live")
    release = start(plane, BOTH)
    ctl = controller(plane, clock)
    ctl.tick()  # started
    interval(clock, ctl)
    first = plane.runs.of_release(release.id)[-1].results["alarms"]
    assert {name: a["state"] for name, a in first.items()} == {
        "candidate-errors": "ok",
        "alias-errors": "ok",
    }

    set_state(aws, ALIAS_ALARM, "ALARM")
    interval(clock, ctl)
    interval(clock, ctl)
    assert plane.releases.get(release.id).phase == "running", "an alias-wide alarm alone"
    [report] = alarm_events(plane, release.id)  # once, not every interval
    assert report.startswith(
        "alarm alias-errors is in ALARM but not attributable to the candidate by its"
        " dimensions: no rollback on its own, the judge decides whether the canary is to blame"
        f" (CloudWatch alarm {ALIAS_ALARM} is in ALARM since "
    )
    assert "alias-wide: Resource=place-order:live counts every version behind alias live" in (
        report
    )
    run = plane.runs.of_release(release.id)[-1]
    assert run.results["alarms"]["alias-errors"]["blame"] == "shared"
    assert run.results["alarms"]["alias-errors"]["preexisting"] is False
    assert run.action == "continue"
    analysis = [e for e in plane.audit.events(release_id=release.id) if e.kind == "analysis"]
    assert analysis[-1].message.endswith(
        "alarm alias-errors firing, not attributable to the candidate by its dimensions:"
        " the judge decides"
    )

    set_state(aws, CANDIDATE_ALARM, "ALARM", "1 datapoint [3.0] > 0.0")
    interval(clock, ctl)
    after = plane.releases.get(release.id)
    assert after.phase == "rolled_back"
    assert after.reason is not None
    assert after.reason.startswith(
        f"alarm candidate-errors fired: CloudWatch alarm {CANDIDATE_ALARM} is in ALARM since "
    )
    assert after.reason.endswith(
        "(1 datapoint [3.0] > 0.0); its dimensions name the candidate:"
        " Resource=place-order:7 is the candidate of place-order, v2 (Lambda place-order:7)"
    )
    assert "alias-errors" not in after.reason
    last = plane.runs.of_release(release.id)[-1]
    assert (last.outcome, last.action) == ("fail", "rollback")
    assert last.results["alarms"]["candidate-errors"]["blame"] == "candidate"
    rolling = [e for e in plane.audit.events(release_id=release.id) if e.kind == "rolling_back"]
    assert rolling[0].actor == "judge"


def test_an_alarm_already_in_alarm_before_the_release_is_not_attributable(
    aws: Any, plane: ControlPlane, clock: FakeClock
) -> None:
    lambda_alarm(aws, CANDIDATE_ALARM, FunctionName="place-order", Resource="place-order:7")
    set_state(aws, CANDIDATE_ALARM, "ALARM")
    clock.advance(1)  # the release is created a second after the alarm started firing
    release = start(plane, BOTH[:1])
    ctl = controller(plane, clock)
    ctl.tick()
    interval(clock, ctl)
    interval(clock, ctl)
    assert plane.releases.get(release.id).phase == "running", "fix forward: no rollback"
    [report] = alarm_events(plane, release.id)
    assert report.startswith(
        f"alarm candidate-errors was already firing when release {release.id} was created:"
        f" CloudWatch alarm {CANDIDATE_ALARM} is in ALARM since "
    )
    assert report.endswith("not attributed to the canary, no rollback")
    assert plane.runs.of_release(release.id)[-1].results["alarms"]["candidate-errors"][
        "preexisting"
    ]

    # it recovers, then fires again while the release runs: that firing is the canary's
    set_state(aws, CANDIDATE_ALARM, "OK")
    clock.advance(1)
    set_state(aws, CANDIDATE_ALARM, "ALARM")
    interval(clock, ctl)
    assert plane.releases.get(release.id).phase == "rolled_back"


def test_a_stable_version_alarm_and_a_missing_alarm_never_roll_back(
    aws: Any, plane: ControlPlane, clock: FakeClock
) -> None:
    lambda_alarm(aws, "place-order-v6-errors", FunctionName="place-order", Resource="place-order:6")
    release = start(
        plane,
        [
            {"name": "stable-errors", "cloudwatch": "place-order-v6-errors"},
            {"name": "typo", "cloudwatch": "place-order-errrors"},
        ],
    )
    ctl = controller(plane, clock)
    ctl.tick()
    set_state(aws, "place-order-v6-errors", "ALARM")
    interval(clock, ctl)
    interval(clock, ctl)
    assert plane.releases.get(release.id).phase == "running"
    reports = alarm_events(plane, release.id)
    assert len(reports) == 2
    assert (
        "its dimensions name stable: Resource=place-order:6 is the baseline (stable)"
        in (reports[0])
    )
    assert reports[1] == (
        "alarm typo could not be evaluated: there is no CloudWatch alarm named"
        " place-order-errrors (not attributable to the canary: no rollback)"
    )


def test_the_alarms_of_a_release_are_read_in_one_call_per_interval(aws: Any) -> None:
    for i in range(3):
        lambda_alarm(aws, f"alarm-{i}", FunctionName="place-order")
    set_state(aws, "alarm-1", "ALARM")
    alarms = parse_alarms([{"name": f"a{i}", "cloudwatch": f"alarm-{i}"} for i in range(3)])
    assert all(isinstance(a, CloudWatchAlarm) for a in alarms)
    reader = alarms[0].reader  # type: ignore[attr-defined]
    states = [a.evaluate().state for a in alarms]
    assert states == [EvaluationState.OK, EvaluationState.FIRING, EvaluationState.OK]
    assert reader.calls == 1
    set_state(aws, "alarm-2", "ALARM")
    assert [a.evaluate().state for a in alarms][2] is EvaluationState.FIRING
    assert reader.calls == 2, "the next interval reads again, once"


def test_an_alarm_arn_is_read_in_its_region_and_without_a_release_blames_no_version(
    aws: Any,
) -> None:
    west = boto3.client("cloudwatch", region_name="eu-west-1")
    lambda_alarm(west, "orders-errors", FunctionName="place-order", Resource="place-order:7")
    set_state(west, "orders-errors", "ALARM")
    arn = f"arn:aws:cloudwatch:eu-west-1:{ACCOUNT}:alarm:orders-errors"
    [alarm] = parse_alarms([{"name": "orders", "cloudwatch": arn}])
    got = alarm.evaluate()
    assert got.state is EvaluationState.FIRING
    assert got.blame is Blame.SHARED
    assert got.detail.endswith("; no release to attribute it to")
    assert got.since is not None
    assert got.since <= time.time()
    before = alarm.evaluate(at=got.since - 60)
    assert before.state is EvaluationState.OK
    assert "so it was not in this ALARM at" in before.detail
    [here] = parse_alarms([{"name": "orders", "cloudwatch": "orders-errors"}])
    assert here.evaluate().detail == "there is no CloudWatch alarm named orders-errors"


def test_cloudwatch_that_cannot_be_read_is_an_error_evaluation() -> None:
    class Refusing:
        def describe_alarms(self, **kwargs: Any) -> Any:
            raise ConnectionError("could not connect to the endpoint URL")

    reader = CloudWatchAlarmReader(client=Refusing())
    alarm = CloudWatchAlarm("errors", "place-order-errors", reader)
    got = alarm.evaluate()
    assert got.state is EvaluationState.ERROR
    assert got.detail == (
        "cannot read CloudWatch alarm place-order-errors: DescribeAlarms failed:"
        " could not connect to the endpoint URL"
    )


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        (
            {"name": "", "cloudwatch": "place-order-errors"},
            "analysis: alarms[1]: invalid alarm name '': use 1-255 printable characters",
        ),
        (
            {"name": "errors", "cloudwatch": "place-order-errors", "threshold": 1},
            "analysis: alarms[1]: unknown field(s) threshold; a CloudWatch alarm has name,"
            " cloudwatch",
        ),
        (
            {"cloudwatch": "place-order-errors"},
            'analysis: alarms[1]: missing name: a CloudWatch alarm is {"name": "errors",',
        ),
        (
            {"name": "errors", "cloudwatch": ""},
            "analysis: alarms[1]: alarm errors: cloudwatch must be the CloudWatch alarm's name"
            " or ARN",
        ),
        (
            {"name": "errors", "cloudwatch": "arn:aws:sns:us-east-1:123456789012:alarms"},
            "analysis: alarms[1]: alarm errors: 'arn:aws:sns:us-east-1:123456789012:alarms' is"
            " not a CloudWatch alarm ARN",
        ),
        (
            {"name": "errors", "datadog": "monitor"},
            "analysis: alarms[1]: unknown kind of alarm: give prometheus (the server's URL) and"
            " query, or cloudwatch (a CloudWatch alarm's name)",
        ),
    ],
)
def test_bad_cloudwatch_alarm_specs_say_what_to_fix(item: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        release_analysis({"alarms": [item]})
    assert str(caught.value).startswith(problem)


def test_a_bad_spec_starts_no_release(tmp_path: Path, clock: FakeClock) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'coalmine.db'}")
    plane = ControlPlane(store, clock=clock)
    try:
        with pytest.raises(InvalidInput, match="unknown field"):
            start(plane, [{"name": "e", "cloudwatch": "x", "region": "eu-west-1"}])
        assert plane.catalog.get_app(APP).active_release is None
    finally:
        store.dispose()
