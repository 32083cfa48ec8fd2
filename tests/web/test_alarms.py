"""Alarms and analysis runs over HTTP.

``POST /v1/alarms`` takes a simple body or a CloudWatch alarm's SNS
notification (the app from ``?app=``, the body, or the name
``coalmine:<app>:<name>``); a firing alarm rolls the active release back at
once; a malformed body is a 400 naming the problem and writes nothing.
``GET /v1/releases/{id}/analysis`` lists the judge's runs.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from coalmine.controller.leader import SoleLeadership
from coalmine.controller.loop import Controller
from coalmine.core.machine import Tick
from tests.controller import NoHooks
from tests.web.conftest import Web, bearer


def cloudwatch(name: str, state: str = "ALARM", reason: str = "Threshold Crossed") -> str:
    """An SNS HTTP notification of a CloudWatch alarm, as SNS posts it (text/plain)."""
    message = {
        "AlarmName": name,
        "AlarmDescription": "p99 latency of the shop API",
        "AWSAccountId": "123456789012",
        "NewStateValue": state,
        "NewStateReason": reason,
        "StateChangeTime": "2026-11-26T06:00:00.000+0000",
        "Region": "EU (Ireland)",
        "OldStateValue": "OK",
        "Trigger": {"MetricName": "Duration", "Threshold": 500.0},
    }
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
            "TopicArn": "arn:aws:sns:eu-west-1:123456789012:coalmine-alarms",
            "Subject": f'ALARM: "{name}" in EU (Ireland)',
            "Message": json.dumps(message),
            "Timestamp": "2026-11-26T06:00:00.000Z",
            "SignatureVersion": "1",
            "Signature": "EXAMPLE",
            "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/cert.pem",
            "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
        }
    )


def post(web: Web, body: str | dict[str, Any], **params: str) -> Any:
    content = body if isinstance(body, str) else json.dumps(body)
    kind = "text/plain; charset=UTF-8" if isinstance(body, str) else "application/json"
    return web.client.post(
        "/v1/alarms",
        content=content,
        params=params,
        headers={**web.as_("deployer"), "Content-Type": kind},
    )


def running_release(web: Web) -> str:
    rid = web.start_release()
    web.service.releases.advance(rid, Tick(time.time()))
    assert web.service.releases.get(rid).phase == "running"
    return rid


def test_a_simple_alarm_is_recorded_and_listed(sqlite_web: Web) -> None:
    sqlite_web.apply()
    r = post(sqlite_web, {"app": "shop", "name": "p99", "state": "OK", "reason": "p99 120 ms"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["action"], body["changed"], body["release_id"]) == ("none", True, None)
    assert body["message"] == "alarm p99 is OK: p99 120 ms"
    listed = sqlite_web.client.get("/v1/apps/shop/alarms", headers=sqlite_web.as_("viewer"))
    assert listed.status_code == 200
    [alarm] = listed.json()
    assert (alarm["app"], alarm["name"], alarm["state"], alarm["reason"]) == (
        "shop",
        "p99",
        "OK",
        "p99 120 ms",
    )
    since = alarm["since"]
    again = post(sqlite_web, {"app": "shop", "name": "p99", "state": "ok"}).json()
    assert again["changed"] is False
    assert again["alarm"]["since"] == since, "since: when it entered its state"


def test_a_cloudwatch_sns_notification_rolls_the_release_back(web: Web) -> None:
    rid = running_release(web)
    r = post(web, cloudwatch("coalmine:shop:p99-latency", reason="p99 > 500 ms (3 datapoints)"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["action"] == "rolled_back"
    assert body["release_id"] == rid
    assert body["alarm"]["name"] == "p99-latency", "the app is taken out of the name"
    release = web.service.releases.get(rid)
    assert release.phase == "rolling_back"
    assert release.reason == "alarm p99-latency fired: p99 > 500 ms (3 datapoints)"
    events = web.client.get(f"/v1/releases/{rid}/events", headers=web.as_("viewer")).json()
    assert (events[-1]["kind"], events[-1]["actor"]) == ("rolling_back", "alarm:p99-latency")
    routing = web.client.get("/v1/apps/shop/routing", headers=web.as_("viewer")).json()
    assert routing["release"]["phase"] == "rolling_back", "the data plane sees it at once"


def test_sns_with_the_app_as_a_query_parameter(sqlite_web: Web) -> None:
    sqlite_web.apply()
    r = post(sqlite_web, cloudwatch("HighErrors", "INSUFFICIENT_DATA", "no datapoints"), app="shop")
    assert r.status_code == 200, r.text
    alarm = r.json()["alarm"]
    assert (alarm["name"], alarm["state"]) == ("HighErrors", "OK")
    assert alarm["reason"] == "INSUFFICIENT_DATA: no datapoints"


def test_sns_as_a_lambda_receives_it(sqlite_web: Web) -> None:
    sqlite_web.apply()
    record = {"EventSource": "aws:sns", "Sns": json.loads(cloudwatch("coalmine:shop:cpu"))}
    r = post(sqlite_web, {"Records": [record]})
    assert r.status_code == 200, r.text
    assert r.json()["alarm"]["state"] == "ALARM"


def test_an_alarm_firing_before_the_release_does_not_roll_it_back(web: Web) -> None:
    web.apply()
    assert post(web, {"app": "shop", "name": "errors", "state": "ALARM"}).status_code == 200
    rid = running_release(web)
    r = post(web, {"app": "shop", "name": "errors", "state": "ALARM", "reason": "5xx > 5%"})
    body = r.json()
    assert body["action"] == "not_attributed"
    assert "before release shop-1 was created: not attributed to the canary" in body["message"]
    assert web.service.releases.get(rid).phase == "running"
    assert post(web, {"app": "shop", "name": "errors", "state": "OK"}).json()["action"] == "none"
    assert post(web, {"app": "shop", "name": "errors", "state": "ALARM"}).json()["action"] == (
        "rolled_back"
    )


SNS_CONFIRM = json.dumps(
    {
        "Type": "SubscriptionConfirmation",
        "Token": "x",
        "SubscribeURL": "https://sns.example/?Action=ConfirmSubscription",
    }
)


@pytest.mark.parametrize(
    ("body", "params", "problem"),
    [
        ("", {}, "empty body"),
        ("{not json", {}, "the body is not JSON"),
        ("[1, 2]", {}, "the body must be a JSON object"),
        ({"app": "shop", "state": "ALARM"}, {}, "missing name"),
        ({"app": "shop", "name": "p99"}, {}, "missing state"),
        ({"app": "shop", "name": "p99", "state": "RED"}, {}, "invalid alarm state 'RED'"),
        ({"app": "shop", "name": "p99", "state": "OK", "level": 3}, {}, "unknown field(s) level"),
        ({"app": "shop", "name": "p99", "state": "OK", "reason": 5}, {}, "reason must be a string"),
        ({"name": "p99", "state": "ALARM"}, {}, "which app is the alarm for?"),
        ({"app": "Shop!", "name": "p99", "state": "OK"}, {}, "invalid app name"),
        ({"app": "shop", "name": "x" * 256, "state": "OK"}, {}, "invalid alarm name"),
        ({"app": "shop", "name": "p99", "state": "OK"}, {"app": "cart"}, "differs"),
        (cloudwatch("coalmine:cart:p99"), {"app": "shop"}, "differs"),
        (cloudwatch("coalmine:shop"), {}, "is not coalmine:<app>:<name>"),
        (cloudwatch("HighErrors"), {}, "which app is the alarm for?"),
        (cloudwatch("coalmine:shop:x", state="PURPLE"), {}, "invalid alarm state 'PURPLE'"),
        (json.dumps({"Type": "Notification", "Message": "hello"}), {}, "Message is not JSON"),
        (
            json.dumps({"Type": "Notification", "Message": json.dumps({"AlarmName": "a"})}),
            {},
            "missing NewStateValue",
        ),
        (SNS_CONFIRM, {}, "SubscriptionConfirmation is not followed here"),
        ({"Records": []}, {}, "Records must be a list of one SNS record"),
    ],
)
def test_malformed_bodies_are_400_naming_the_problem_and_write_nothing(
    sqlite_web: Web, body: str | dict[str, Any], params: dict[str, str], problem: str
) -> None:
    sqlite_web.apply()
    before = sqlite_web.fingerprint()
    r = post(sqlite_web, body, **params)
    assert r.status_code == 400, r.text
    assert problem in r.json()["detail"]
    assert sqlite_web.fingerprint() == before
    assert sqlite_web.service.alarms.of_app("shop") == []


def test_not_utf8_is_400(sqlite_web: Web) -> None:
    r = sqlite_web.client.post(
        "/v1/alarms", content=b"\xff\xfe", headers=sqlite_web.as_("deployer")
    )
    assert (r.status_code, r.json()["detail"]) == (400, "the body is not UTF-8 text")


def test_unknown_app_is_404_and_writes_nothing(sqlite_web: Web) -> None:
    r = post(sqlite_web, {"app": "nope", "name": "p99", "state": "ALARM"})
    assert r.status_code == 404
    assert r.json()["detail"] == "no app named 'nope'"
    assert (
        sqlite_web.client.get("/v1/apps/nope/alarms", headers=sqlite_web.as_("viewer")).status_code
        == 404
    )


def test_only_deployers_raise_alarms(sqlite_web: Web) -> None:
    sqlite_web.apply()
    body = json.dumps({"app": "shop", "name": "p99", "state": "ALARM"})
    c = sqlite_web.client
    assert c.post("/v1/alarms", content=body).status_code == 401
    viewer = c.post("/v1/alarms", content=body, headers=sqlite_web.as_("viewer"))
    assert viewer.status_code == 403
    assert viewer.json()["detail"] == "role viewer cannot raise alarms; needs deployer"
    sdk = c.post("/v1/alarms", content=body, headers=bearer(sqlite_web.sdk_key("shop")))
    assert sdk.status_code == 403
    admin = c.post("/v1/alarms", content=body, headers=sqlite_web.as_("admin"))
    assert admin.status_code == 200
    too_big = c.post("/v1/alarms", content=b" " * (257 * 1024), headers=sqlite_web.as_("deployer"))
    assert too_big.status_code == 413


def test_analysis_runs_are_listed_by_release(web: Web) -> None:
    web.apply()
    r = web.client.post(
        "/v1/apps/shop/releases",
        json={"candidate": {"api": "v2"}, "analysis": {"interval": "10s", "min_requests": 50}},
        headers=web.as_("deployer"),
    )
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    ctl = Controller(web.service, leadership=SoleLeadership(), hooks=NoHooks())
    ctl.tick()  # started
    now = time.time()
    for i in (1, 2):
        ctl.tick(now + 10 * i + 1)
    view = web.as_("viewer")
    runs = web.client.get(f"/v1/releases/{rid}/analysis", headers=view)
    assert runs.status_code == 200
    got = runs.json()
    assert [(run["outcome"], run["action"]) for run in got] == [("inconclusive", "continue")] * 2
    assert got[0]["results"]["reason"] == (
        "no data: no changed function (api) has served a call in either channel since"
        " traffic started"
    )
    # no data yet is waiting for evidence: not counted towards max_inconclusive
    assert got[1]["results"]["tracker"]["consecutive_inconclusive"] == 0
    assert got[1]["results"]["evidence"]["open"] is False
    assert got[0]["window_start"] <= got[0]["window_end"] < got[1]["window_end"]
    page = web.client.get(
        f"/v1/releases/{rid}/analysis", params={"after": got[0]["id"]}, headers=view
    )
    assert [run["id"] for run in page.json()] == [got[1]["id"]]
    latest = web.client.get(f"/v1/releases/{rid}/events", headers=view).json()[-1]
    assert latest["kind"] == "analysis"
    assert latest["message"].startswith("waiting for evidence: no data: no changed function")
    assert latest["data"]["evidence"]["open"] is False
    assert latest["data"]["evidence"]["idle"] == ["api"]
    missing = web.client.get("/v1/releases/shop-99/analysis", headers=view)
    assert missing.status_code == 404
    last = web.client.get(f"/v1/releases/{rid}/analysis/latest", headers=view)
    assert last.status_code == 200
    assert last.json() == got[1]
    assert web.client.get("/v1/releases/shop-99/analysis/latest", headers=view).status_code == 404


def test_a_release_with_invalid_analysis_is_refused(sqlite_web: Web) -> None:
    sqlite_web.apply()
    r = sqlite_web.client.post(
        "/v1/apps/shop/releases",
        json={"candidate": {"api": "v2"}, "analysis": {"metrics": {"latency": {}}}},
        headers=sqlite_web.as_("deployer"),
    )
    assert r.status_code == 400
    assert r.json()["detail"].startswith("analysis: unknown metric 'latency'")
    assert sqlite_web.service.releases.recent("shop") == []
