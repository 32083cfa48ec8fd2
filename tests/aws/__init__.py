"""Tests of coalmine on AWS events, and helpers other AWS tests reuse.

`SnapshotRouter` is a `SnapshotClient` over a fixed `RoutingSnapshot` (it
decides with the shared pure function, signs with `KEYRING`, and keeps the
calls it counts); `LambdaContext` is the context object Lambda passes;
`sqs_record` / `kinesis_record` build the records Lambda's event source
mappings deliver; `InProcessInvoker` is a `LambdaInvoker` that runs each
version's handler in this process, as Lambda Invoke would, and keeps what it
was sent. `cloudwatch_clock` makes a test's fake clock moto's CloudWatch clock.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from coalmine.core.model import Channel, Decision, Release
from coalmine.core.ports import LambdaInvocation
from coalmine.core.routing import RoutingState
from coalmine.core.signing import Keyring
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.core.strategy import parse_strategy
from coalmine.sdk.router import StaticRouter
from tests.helpers import FakeClock

APP = "orders"
FUNCTION = "notify-user"
ACCOUNT = "123456789012"
REGION = "us-east-1"
KEYRING = Keyring.single("aws-test-signing-secret-0123456789", "a1")
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{FUNCTION}"
QUALIFIERS = {"v1": "1", "v2": "2"}
"""coalmine version -> the Lambda version number it is published as"""
STREAM_ARN = f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/orders"
QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:orders"
FIFO_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:orders.fifo"


def make_snapshot(exposure: int = 3000, *, phase: str = "running") -> RoutingSnapshot:
    """orders: notify-user v1 -> v2 at ``exposure``; both versions are Lambda versions."""
    release = Release(
        id="orders-1",
        app=APP,
        baseline={FUNCTION: "v1"},
        candidate={FUNCTION: "v2"},
        salt="fedcba9876543210",
        strategy=parse_strategy("30%:10m, 100%"),
        exposure=exposure,
        phase=phase,  # type: ignore[arg-type]
    )
    state = RoutingState(APP, {FUNCTION: "v1"}, release)
    targets = {FUNCTION: {v: f"{FUNCTION_ARN}:{q}" for v, q in QUALIFIERS.items()}}
    return RoutingSnapshot(state, 1, targets)


@dataclass
class SnapshotRouter:
    """A `SnapshotClient` over a snapshot the test may replace (``router.snap = ...``)."""

    snap: RoutingSnapshot | None
    keyring: Keyring | None = KEYRING
    counted: list[tuple[str, str, str, bool]] = field(default_factory=list)
    """(function, version, channel, error) of every `record`"""
    recorder: object | None = "counts"

    def _static(self) -> StaticRouter | None:
        if self.snap is None:
            return None
        return StaticRouter(self.snap.state, self.keyring)

    def decide(self, app: str, user_key: str | None, context: str | None = None) -> Decision:
        static = self._static()
        if static is None:
            from coalmine.core.model import Reason

            return Decision(app, None, Channel.STABLE, {}, Reason.ERROR, "no snapshot")
        return static.decide(app, user_key, context)

    def encode(self, decision: Decision, *, user: str | None = None) -> str | None:
        static = self._static()
        return static.encode(decision, user=user) if static is not None else None

    def record(
        self,
        app: str,
        function: str,
        version: str,
        channel: Channel | str,
        duration_ms: float | None,
        *,
        error: bool = False,
    ) -> None:
        self.counted.append((function, version, str(channel), error))

    def snapshot(self, app: str) -> RoutingSnapshot | None:
        return self.snap if self.snap is not None and app == self.snap.app else None


def users_by_channel(snap: RoutingSnapshot, count: int = 400) -> tuple[list[str], list[str]]:
    """(stable users, canary users) among ``u0..u<count>``."""
    router = StaticRouter(snap.state, KEYRING)
    stable, canary = [], []
    for i in range(count):
        user = f"u{i}"
        (canary if router.decide(APP, user).is_canary else stable).append(user)
    return stable, canary


@dataclass(frozen=True)
class LambdaContext:
    """The parts of Lambda's context object coalmine reads."""

    function_version: str
    function_name: str = FUNCTION
    alias: str | None = "live"

    @property
    def invoked_function_arn(self) -> str:
        return f"{FUNCTION_ARN}:{self.alias}" if self.alias else FUNCTION_ARN


def sqs_record(
    message_id: str,
    body: str,
    *,
    user: str | None = None,
    baggage: str | None = None,
    group: str | None = None,
) -> dict[str, Any]:
    """An SQS record as Lambda delivers it (``group``: a FIFO queue's message group)."""
    attributes: dict[str, Any] = {}
    if user is not None:
        attributes["coalmine-user"] = {"stringValue": user, "dataType": "String"}
    if baggage is not None:
        attributes["baggage"] = {"stringValue": baggage, "dataType": "String"}
    attrs: dict[str, str] = {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000"}
    if group is not None:
        attrs["MessageGroupId"] = group
    return {
        "messageId": message_id,
        "receiptHandle": f"rh-{message_id}",
        "body": body,
        "attributes": attrs,
        "messageAttributes": attributes,
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": FIFO_ARN if group is not None else QUEUE_ARN,
        "awsRegion": REGION,
    }


def kinesis_record(
    sequence: str, data: bytes, *, partition_key: str, shard: str = "shardId-000000000000"
) -> dict[str, Any]:
    """A Kinesis record as Lambda delivers it."""
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partition_key,
            "sequenceNumber": sequence,
            "data": base64.b64encode(data).decode("ascii"),
            "approximateArrivalTimestamp": time.time(),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard}:{sequence}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": f"arn:aws:iam::{ACCOUNT}:role/lambda",
        "awsRegion": REGION,
        "eventSourceARN": STREAM_ARN,
    }


Handler = Callable[[Any, Any], Any]


@dataclass
class InProcessInvoker:
    """Runs ``handlers[qualifier](event, LambdaContext(qualifier))`` as Lambda Invoke would.

    The payload goes through JSON both ways; a handler that raises answers as
    a function error (``Unhandled``); ``refuse`` makes the call itself fail
    (as a throttled invoke does). Every call is kept in ``calls``.
    """

    handlers: Mapping[str, Handler]
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    refuse: Exception | None = None

    def invoke(self, function: str, qualifier: str, payload: bytes) -> LambdaInvocation:
        event = json.loads(payload)
        self.calls.append((function, qualifier, event))
        if self.refuse is not None:
            raise self.refuse
        handler = self.handlers[qualifier]
        try:
            result = handler(event, LambdaContext(qualifier, alias=None))
        except Exception as exc:
            error = {"errorMessage": str(exc), "errorType": type(exc).__name__}
            return LambdaInvocation(json.dumps(error).encode(), "Unhandled")
        return LambdaInvocation(json.dumps(result).encode())


@contextmanager
def aws_environment() -> Iterator[None]:
    """Fake credentials and a region for boto3 on moto, undone afterwards."""
    mp = pytest.MonkeyPatch()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        mp.setenv(name, value)
    try:
        yield
    finally:
        mp.undo()


def cloudwatch_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """A fake clock that is also moto's CloudWatch clock (alarm timestamps), so an alarm's
    ``StateUpdatedTimestamp`` and a release's times compare as in production."""
    from datetime import UTC, datetime

    fake = FakeClock()

    def utcnow() -> datetime:
        return datetime.fromtimestamp(fake.now, UTC).replace(tzinfo=None)

    monkeypatch.setattr("moto.cloudwatch.models.utcnow", utcnow)
    return fake
