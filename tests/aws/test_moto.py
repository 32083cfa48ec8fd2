"""The real boto3 calls on moto: messages sent with the carriers come out of SQS (directly,
through SNS with raw delivery on and off, through an EventBridge rule) with the context
intact; the batch router's boto3 invoker sends FunctionName, Qualifier and the batch."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest

from coalmine.sdk.aws_carriers import (
    aws_user,
    extract_sqs,
    inject_eventbridge,
    inject_sns,
    inject_sqs,
)
from coalmine.sdk.batch_router import Boto3Invoker, route_batch
from tests.aws import (
    APP,
    FUNCTION,
    REGION,
    LambdaContext,
    SnapshotRouter,
    aws_environment,
    make_snapshot,
    sqs_record,
    users_by_channel,
)

boto3 = pytest.importorskip("boto3")
moto = pytest.importorskip("moto")

TOKEN = "v1.eyJhIjoxfQ.sig"


@pytest.fixture
def aws() -> Iterator[None]:
    with aws_environment(), moto.mock_aws(config={"lambda": {"use_docker": False}}):
        yield


def _queue(sqs: Any, name: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    return url, arn["QueueArn"]


def _receive(sqs: Any, url: str) -> dict[str, Any]:
    got = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"], WaitTimeSeconds=0)
    [message] = got["Messages"]
    return dict(message)


def test_sqs_send_message_and_batch(aws: None) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    url, _ = _queue(sqs, "orders")
    sqs.send_message(**inject_sqs({"QueueUrl": url, "MessageBody": "one"}, TOKEN, user="u-1"))
    message = _receive(sqs, url)
    assert extract_sqs(message) == TOKEN
    assert aws_user(message) == "u-1"
    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    batch = {"QueueUrl": url, "Entries": [{"Id": "a", "MessageBody": "two"}]}
    sqs.send_message_batch(**inject_sqs(batch, TOKEN, user="u-2"))
    message = _receive(sqs, url)
    assert extract_sqs(message) == TOKEN
    assert aws_user(message) == "u-2"


@pytest.mark.parametrize("raw", [False, True])
def test_sns_to_sqs_with_and_without_raw_delivery(aws: None, raw: bool) -> None:
    sqs, sns = boto3.client("sqs", region_name=REGION), boto3.client("sns", region_name=REGION)
    url, arn = _queue(sqs, f"notify-{raw}")
    topic = sns.create_topic(Name=f"orders-{raw}")["TopicArn"]
    sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=arn,
        Attributes={"RawMessageDelivery": "true" if raw else "false"},
    )
    sns.publish(**inject_sns({"TopicArn": topic, "Message": "hello"}, TOKEN, user="u-3"))
    message = _receive(sqs, url)
    body_is_envelope = message["Body"] != "hello"
    assert body_is_envelope is not raw
    assert extract_sqs(message) == TOKEN
    assert aws_user(message) == "u-3"


def test_eventbridge_to_an_sqs_target(aws: None) -> None:
    sqs, events = (
        boto3.client("sqs", region_name=REGION),
        boto3.client("events", region_name=REGION),
    )
    url, arn = _queue(sqs, "events")
    events.put_rule(Name="orders", EventPattern=json.dumps({"source": ["shop"]}))
    events.put_targets(Rule="orders", Targets=[{"Id": "q", "Arn": arn}])
    entry = {"Source": "shop", "DetailType": "order placed", "Detail": json.dumps({"id": 7})}
    answer = events.put_events(**inject_eventbridge({"Entries": [entry]}, TOKEN, user="u-4"))
    assert answer["FailedEntryCount"] == 0
    message = _receive(sqs, url)
    event = json.loads(message["Body"])
    assert event["detail"]["id"] == 7  # the detail is the producer's, plus one field
    assert extract_sqs(message) == TOKEN
    assert aws_user(message) == "u-4"


def _function(client: Any) -> list[str]:
    iam = boto3.client("iam", region_name=REGION)
    role = iam.create_role(
        RoleName="lambda", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"})
    )["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as z:
        z.writestr("app.py", "def handler(event, context):\n    return event\n")
    client.create_function(
        FunctionName=FUNCTION,
        Runtime="python3.11",
        Role=role,
        Handler="app.handler",
        Code={"ZipFile": code.getvalue()},
    )
    return [client.publish_version(FunctionName=FUNCTION)["Version"] for _ in range(2)]


def test_the_boto3_invoker_sends_the_qualifier_and_the_batch(aws: None) -> None:
    client = boto3.client("lambda", region_name=REGION)
    versions = _function(client)
    sent: list[tuple[str, bytes]] = []

    def capture(request: Any, **_: Any) -> None:
        sent.append((request.url, request.body))

    client.meta.events.register("before-send.lambda.Invoke", capture)
    snap = make_snapshot(3000)
    stable, canary = users_by_channel(snap)
    router = SnapshotRouter(snap)
    ran: list[str] = []
    handle = route_batch(router, APP, FUNCTION, invoker=Boto3Invoker(client))(
        lambda event, context: ran.extend(r["messageId"] for r in event["Records"])
    )
    records = [sqs_record("m0", "{}", user=stable[0]), sqs_record("m1", "{}", user=canary[0])]
    # moto's Lambda without Docker answers with the payload it got: no batchItemFailures
    assert handle({"Records": records}, LambdaContext(versions[0])) == {"batchItemFailures": []}
    assert ran == ["m0"]
    [(url, body)] = sent
    assert (
        "/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Anotify-user/" in url
    )
    assert url.endswith("/invocations?Qualifier=2")
    event = json.loads(body)
    assert [r["messageId"] for r in event["Records"]] == ["m1"]
    assert event["coalmine"]["forwarded_by"] == f"{FUNCTION}:v1"


def test_the_boto3_invoker_reads_the_answer(aws: None) -> None:
    from moto.awslambda_simple.models import lambda_simple_backends

    client = boto3.client("lambda", region_name=REGION)
    _function(client)
    backend = lambda_simple_backends["123456789012"][REGION]
    answer = {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    backend.lambda_simple_results_queue.append(json.dumps(answer))
    got = Boto3Invoker(client).invoke(FUNCTION, "2", b'{"Records": []}')
    assert json.loads(got.payload) == answer
    assert got.function_error is None
    assert got.status == 200


def test_instrumented_clients_carry_the_current_context(aws: None) -> None:
    from coalmine.sdk import use
    from coalmine.sdk.aws_instrument import instrument_messaging

    snap = make_snapshot(3000)
    _, canary = users_by_channel(snap)
    router = SnapshotRouter(snap)
    decision = router.decide(APP, canary[0])
    token = router.encode(decision)
    sqs = instrument_messaging(instrument_messaging(boto3.client("sqs", region_name=REGION)))
    sns = instrument_messaging(boto3.client("sns", region_name=REGION))
    events = instrument_messaging(boto3.client("events", region_name=REGION))
    url, arn = _queue(sqs, "instrumented")
    topic = sns.create_topic(Name="instrumented")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    events.put_rule(Name="all", EventPattern=json.dumps({"source": ["shop"]}))
    events.put_targets(Rule="all", Targets=[{"Id": "q", "Arn": arn}])

    sqs.send_message(QueueUrl=url, MessageBody="outside a scope")
    with use(decision, token):
        sqs.send_message(QueueUrl=url, MessageBody="direct")
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "1", "MessageBody": "batch"}])
        sns.publish(TopicArn=topic, Message="via sns")
        events.put_events(Entries=[{"Source": "shop", "DetailType": "d", "Detail": "{}"}])
        explicit = inject_sqs({"QueueUrl": url, "MessageBody": "explicit"}, "mine")
        sqs.send_message(**explicit)
    got: dict[str, str | None] = {}
    for _ in range(20):  # moto delivers at once; bounded, not timed
        if len(got) == 6:
            break
        answer = sqs.receive_message(
            QueueUrl=url, MessageAttributeNames=["All"], MaxNumberOfMessages=10
        )
        for m in answer.get("Messages", []):
            body = m["Body"]
            doc = json.loads(body) if body.startswith("{") else {}
            name = doc.get("Message") or doc.get("source") or body
            got[name] = extract_sqs(m)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    assert got == {
        "outside a scope": None,
        "direct": token,
        "batch": token,
        "via sns": token,
        "shop": token,
        "explicit": "mine",
    }


def test_instrumenting_another_service_is_refused(aws: None) -> None:
    from coalmine.sdk.aws_instrument import instrument_messaging

    with pytest.raises(TypeError, match="sqs, sns or events"):
        instrument_messaging(boto3.client("s3", region_name=REGION))
