"""SQS, SNS and EventBridge carriers: inject into boto3 call parameters, read every shape a
consumer receives, and the handler decorator reads them too."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalmine.core.errors import InvalidInput
from coalmine.core.model import Channel
from coalmine.sdk import handler, record_decisions, use
from coalmine.sdk.aws_carriers import (
    USER_ATTRIBUTE,
    aws_context,
    aws_user,
    extract_eventbridge,
    extract_sns,
    extract_sqs,
    inject_eventbridge,
    inject_sns,
    inject_sqs,
)
from coalmine.sdk.publish import USER_HEADER
from tests.aws import APP, SnapshotRouter, make_snapshot, sqs_record, users_by_channel

TOKEN = "v1.eyJhIjoxfQ.sig"
_token = st.from_regex(r"[A-Za-z0-9._~-]{1,120}", fullmatch=True)
_user = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)


def _lambda_sqs(params: dict[str, Any]) -> dict[str, Any]:
    """The Lambda SQS record of a message sent with ``params``."""
    attrs = {
        name: {"stringValue": a["StringValue"], "dataType": a["DataType"]}
        for name, a in params.get("MessageAttributes", {}).items()
    }
    return sqs_record("m1", params.get("MessageBody", "")) | {"messageAttributes": attrs}


def _lambda_sns(params: dict[str, Any]) -> dict[str, Any]:
    """The Lambda SNS record of a message published with ``params``."""
    attrs = {
        name: {"Type": a["DataType"], "Value": a["StringValue"]}
        for name, a in params.get("MessageAttributes", {}).items()
    }
    sns = {"Type": "Notification", "TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": "x"}
    return {"EventSource": "aws:sns", "Sns": sns | {"MessageAttributes": attrs}}


def _lambda_eventbridge(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "0",
        "id": "e1",
        "detail-type": entry["DetailType"],
        "source": entry["Source"],
        "detail": json.loads(entry["Detail"]),
    }


def test_sqs_attributes_are_plain_strings() -> None:
    params = inject_sqs({"QueueUrl": "q", "MessageBody": "hi"}, TOKEN, user="u-1")
    assert params["MessageAttributes"] == {
        "baggage": {"DataType": "String", "StringValue": f"coalmine={TOKEN}"},
        "coalmine-user": {"DataType": "String", "StringValue": "u-1"},
    }
    assert USER_ATTRIBUTE == USER_HEADER
    record = _lambda_sqs(params)
    assert extract_sqs(record) == TOKEN
    assert aws_user(record) == "u-1"


def test_inject_keeps_other_baggage_and_attributes_and_respects_replace() -> None:
    params: dict[str, Any] = {
        "MessageAttributes": {
            "baggage": {"DataType": "String", "StringValue": "tenant=a,coalmine=old"},
            "trace": {"DataType": "String", "StringValue": "t"},
        }
    }
    inject_sqs(params, TOKEN, replace=False)
    assert params["MessageAttributes"]["baggage"]["StringValue"] == "tenant=a,coalmine=old"
    inject_sqs(params, TOKEN)
    assert params["MessageAttributes"]["baggage"]["StringValue"] == f"tenant=a,coalmine={TOKEN}"
    assert params["MessageAttributes"]["trace"]["StringValue"] == "t"


def test_batches_get_it_on_every_entry_and_nothing_changes_without_context() -> None:
    batch = {"QueueUrl": "q", "Entries": [{"Id": "1", "MessageBody": "a"}, {"Id": "2"}]}
    assert inject_sqs(dict(batch)) == batch  # no token in scope, no user: unchanged
    inject_sqs(batch, TOKEN)
    assert all(extract_sqs(_lambda_sqs(e)) == TOKEN for e in batch["Entries"])
    sns = {"PublishBatchRequestEntries": [{"Id": "1", "Message": "a"}]}
    inject_sns(sns, TOKEN)
    assert extract_sns(_lambda_sns(sns["PublishBatchRequestEntries"][0])) == TOKEN


def test_the_current_scope_is_used() -> None:
    router = SnapshotRouter(make_snapshot(3000))
    _, canary = users_by_channel(router.snap)  # type: ignore[arg-type]
    decision = router.decide(APP, canary[0])
    token = router.encode(decision)
    with use(decision, token):
        params = inject_sqs({"MessageBody": "x"})
        entry = inject_eventbridge({"Source": "s", "DetailType": "d", "Detail": "{}"})
    assert extract_sqs(_lambda_sqs(params)) == token
    assert extract_eventbridge(_lambda_eventbridge(entry)) == token


def test_too_many_attributes_and_bad_details_are_refused() -> None:
    attrs = {f"a{i}": {"DataType": "String", "StringValue": "x"} for i in range(9)}
    with pytest.raises(InvalidInput, match="at most 10 message attributes"):
        inject_sqs({"MessageAttributes": attrs}, TOKEN, user="u")
    with pytest.raises(InvalidInput, match="JSON object"):
        inject_eventbridge({"Detail": "[1]"}, TOKEN)
    with pytest.raises(InvalidInput, match="list of dicts"):
        inject_sns({"PublishBatchRequestEntries": "x"}, TOKEN)


def test_eventbridge_detail_keeps_the_event() -> None:
    entry = {"Source": "shop", "DetailType": "order", "Detail": json.dumps({"order": 7})}
    inject_eventbridge({"Entries": [entry]}, TOKEN, user="u-9")
    detail = json.loads(entry["Detail"])
    assert detail == {"order": 7, "coalmine": {"baggage": f"coalmine={TOKEN}", "user": "u-9"}}
    event = _lambda_eventbridge(entry)
    assert aws_context(event) == TOKEN
    assert aws_user(event) == "u-9"
    assert aws_user(event, "order") is None  # not a string
    assert extract_eventbridge(json.dumps(event)) == TOKEN


def test_bodies_from_subscriptions_are_read() -> None:
    notification = {
        "Type": "Notification",
        "MessageId": "n1",
        "TopicArn": "arn:aws:sns:us-east-1:1:t",
        "Message": "hello",
        "MessageAttributes": {
            "baggage": {"Type": "String", "Value": f"coalmine={TOKEN}"},
            "coalmine-user": {"Type": "String", "Value": "u-3"},
        },
    }
    record = sqs_record("m1", json.dumps(notification))
    assert extract_sqs(record) == TOKEN
    assert aws_user(record) == "u-3"
    event = {"detail-type": "d", "source": "s", "detail": {"coalmine": {"baggage": "coalmine=t"}}}
    record = sqs_record("m2", json.dumps(event))
    assert extract_sqs(record) == "t"
    for body in ("plain", "{not json", json.dumps({"a": 1}), "[]"):
        assert extract_sqs(sqs_record("m3", body)) is None
    assert aws_context(None) is None
    assert aws_context({"x": 1}) is None


@given(_token, _user)
def test_round_trips(token: str, user: str) -> None:
    sqs = inject_sqs({"MessageBody": "b"}, token, user=user)
    assert extract_sqs(_lambda_sqs(sqs)) == token
    assert aws_user(_lambda_sqs(sqs)) == user
    sns = inject_sns({"Message": "b"}, token, user=user)
    assert extract_sns(_lambda_sns(sns)) == token
    assert aws_user(_lambda_sns(sns)) == user
    entry = inject_eventbridge({"Source": "s", "DetailType": "d"}, token, user=user)
    event = _lambda_eventbridge(entry)
    assert extract_eventbridge(event) == token
    assert aws_user(event) == user


def test_the_handler_decorator_reads_sns_and_eventbridge() -> None:
    router = SnapshotRouter(make_snapshot(3000))
    snap = router.snap
    assert snap is not None
    stable, canary = users_by_channel(snap)
    # a canary chain of stable[0] (decided before, say, the exposure dropped)
    token = router.encode(router.decide(APP, canary[0]), user=stable[0])
    seen: list[Channel] = []

    @handler(router, APP, user="coalmine-user")
    def on_sns(event: Any, context: Any) -> None:
        seen.extend(r.decision.channel for r in record_decisions())

    on_sns({"Records": [_lambda_sns(inject_sns({"Message": "m"}, token, user=stable[0]))]}, None)
    on_sns({"Records": [_lambda_sns(inject_sns({"Message": "m"}, user=canary[1]))]}, None)
    assert seen == [Channel.CANARY, Channel.CANARY]

    @handler(router, APP, user="customer")
    def on_event(event: Any, context: Any) -> str:
        from coalmine.sdk import current_decision

        decision = current_decision()
        assert decision is not None
        return str(decision.channel)

    entry = {"Source": "s", "DetailType": "d", "Detail": json.dumps({"customer": canary[2]})}
    assert on_event(_lambda_eventbridge(entry), None) == "canary"
    entry = {"Source": "s", "DetailType": "d", "Detail": json.dumps({"customer": stable[0]})}
    assert on_event(_lambda_eventbridge(inject_eventbridge(entry, token)), None) == "canary"
