"""The article's app as Lambda handlers, each routed inside the function, with no gateway.

``api`` (HTTP API entry, behind the alias ``live`` on version 1) calls
``price`` through an instrumented boto3 Lambda client (Lambda to Lambda),
then puts ``order_placed`` on the Kinesis stream ``orders`` in the coalmine
envelope. ``notify-user`` (an event source mapping on ``orders``) needs the
``delivery_eta`` that only ``api`` version 2 adds (the article's failure), and
sends an email request to the SQS queue ``emails`` with the context in its
message attributes. ``send-email`` (an event source mapping on ``emails``)
writes each whole chain to the shared `CHAINS`.

Each Lambda version loads this module on its own, as its own execution
environment, so each has its own `Client` (refreshing at invocation) and
boto3 clients; every one is configured by the environment as a deployed
function is: ``COALMINE_URL``, ``COALMINE_SDK_KEY``, ``COALMINE_SIGNING_KEYS``,
``COALMINE_MAX_AGE`` and the standard AWS variables.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from typing import Any

from coalmine.sdk import (
    current_decision,
    inject_sqs,
    record_decisions,
    route_batch,
    route_lambda,
)
from coalmine.sdk.envelope import unwrap, wrap
from tests.aws.chains import CHAINS, FAILURES
from tests.aws.fake_lambda import environment

APP = "food-ordering"
_lock = threading.Lock()
_made: dict[str, Any] = {}


def _setup() -> dict[str, Any]:
    with _lock:
        if not _made:
            _made.update(environment(APP, "kinesis", "sqs"))
        return _made


def _version(context: Any) -> str:
    return f"v{context.function_version}"


# -- api: the HTTP entry ----------------------------------------------------------------


def api(event: dict[str, Any], context: Any) -> Any:
    made = _setup()
    routed = route_lambda(made["client"], APP, "api", user="x-user-id", lambda_client=made["lam"])
    return routed(_api)(event, context)


def _api(event: dict[str, Any], context: Any) -> dict[str, Any]:
    made = _setup()
    body = event["body"]
    order = json.loads(base64.b64decode(body) if event.get("isBase64Encoded") else body)
    priced = made["lam"].invoke(FunctionName="price", Payload=json.dumps(order))
    price = json.loads(priced["Payload"].read())
    chain = [["api", _version(context)], price["ran"]]
    placed = {"order_id": order["order_id"], "user": order["user"], "chain": chain}
    if _version(context) == "v2":
        placed["delivery_eta"] = "25 min"  # what notify-user v2 needs
    made["kinesis"].put_record(StreamName="orders", Data=wrap(placed), PartitionKey=order["user"])
    decision = current_decision()
    return {
        "statusCode": 201,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(
            {
                "order_id": order["order_id"],
                "channel": str(decision.channel),
                "version": _version(context),
            }
        ),
    }


# -- price: called Lambda to Lambda -----------------------------------------------------


def price(event: dict[str, Any], context: Any) -> Any:
    made = _setup()
    routed = route_lambda(
        made["client"], APP, "price", user=lambda e: e.get("user"), lambda_client=made["lam"]
    )
    return routed(_price)(event, context)


def _price(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"price": 12.5, "ran": ["price", _version(context)]}


# -- notify-user: Kinesis -> SQS --------------------------------------------------------


def notify_user(event: dict[str, Any], context: Any) -> Any:
    made = _setup()
    return route_batch(made["client"], APP, "notify-user", user="user")(_notify)(event, context)


def _notify(event: dict[str, Any], context: Any) -> dict[str, Any]:
    made = _setup()
    failures = []
    for record in record_decisions():
        kinesis = record.record["kinesis"]
        with record.use():
            placed, _token = unwrap(base64.b64decode(kinesis["data"]))
            try:
                if _version(context) == "v2":
                    eta = placed["delivery_eta"]  # KeyError on a v1 order: the article's bug
                    text = f"your order arrives in {eta}"
                else:
                    text = "your order is on its way"
            except KeyError as exc:
                FAILURES.append((placed["user"], f"notify-user {_version(context)}: {exc!r}"))
                failures.append({"itemIdentifier": kinesis["sequenceNumber"]})
                continue
            chain = [*placed["chain"], ["notify-user", _version(context)]]
            body = {"user": placed["user"], "order_id": placed["order_id"], "chain": chain}
            params = {"QueueUrl": os.environ["EMAILS_QUEUE_URL"], "MessageBody": json.dumps(body)}
            inject_sqs(params, user=placed["user"])
            params["MessageBody"] = json.dumps({**body, "text": text})
            made["sqs"].send_message(**params)
    return {"batchItemFailures": failures}


# -- send-email: SQS --------------------------------------------------------------------


def send_email(event: dict[str, Any], context: Any) -> Any:
    made = _setup()
    return route_batch(made["client"], APP, "send-email")(_send)(event, context)


def _send(event: dict[str, Any], context: Any) -> dict[str, Any]:
    for record in record_decisions():
        body = json.loads(record.record["body"])
        CHAINS.append((body["user"], [*body["chain"], ["send-email", _version(context)]]))
    return {"batchItemFailures": []}
