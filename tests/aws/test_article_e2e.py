"""The article's chain on Lambda, end to end over the real wire protocols, with no gateway.

An HTTP entry function, a Lambda-to-Lambda call, a Kinesis hop and an SQS
hop (`tests.aws.article_chain`), every function routed inside itself:
LocalLambda speaks the Lambda Invoke API, a moto server on 127.0.0.1 speaks
Kinesis and SQS, boto3 reaches both through the standard
``AWS_ENDPOINT_URL_*`` variables, and the test plays the two event source
mappings (read the stream or the queue, invoke the function's stable alias
with the batch, as Lambda's pollers do).

In user mode at 20% raised to 60% mid-run, every order's chain runs one
channel's versions end to end and no order fails; orders placed at 20% keep
their channel after the raise (the context pins them). In request mode, as
a Lambda weighted alias routes, chains mix versions and ``notify-user`` v2
fails on orders from ``api`` v1 (``KeyError: 'delivery_eta'``).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from coalmine.controller.schemas import ReleaseCreate
from coalmine.core.bucketing import bucket
from coalmine.core.machine import Tick
from coalmine.gateway import GatewayConfig, IdentityConfig, create_gateway
from coalmine.gateway.server import PROTOCOL
from coalmine.integrations.lambda_local import LambdaFunction, LocalLambda, serve_in_thread
from coalmine.sdk.keys import keyring_from_env
from tests.aws import kinesis_record, sqs_record
from tests.aws.chains import CHAINS, FAILURES
from tests.aws.fake_lambda import arn, close_opened, fake_aws_env
from tests.helpers import free_port
from tests.sdk import ControlPlane
from tests.servers import start_uvicorn

pytestmark = pytest.mark.slow

APP = "food-ordering"
FUNCTIONS = {
    "api": "api",
    "price": "price",
    "notify-user": "notify_user",
    "send-email": "send_email",
}
KEYS = "t1:sdk-test-signing-secret-0123456789"


def _spec() -> dict[str, Any]:
    return {
        "app": APP,
        "functions": {
            name: {"versions": {"v1": arn(name, "1"), "v2": arn(name, "2")}, "current": "v1"}
            for name in FUNCTIONS
        },
        "release": {"strategy": "20%:1h, 60%:1h, 100%"},
    }


@dataclass
class Stack:
    plane: ControlPlane
    lam: Any
    kinesis: Any
    sqs: Any
    queue_url: str
    iterator: str
    placed: int = 0
    gateway_url: str | None = None
    """set: orders enter through `coalmine gateway` (Lambda targets), not the stable alias"""

    def place(self, users: list[str], workers: int = 6) -> list[str]:
        """Each user places one order through the entry function's stable alias.

        With several ``workers`` one environment serves concurrent invocations
        (a real Lambda environment serves one at a time), so an invocation may
        route by the snapshot a concurrent one is still refreshing.
        """

        def one(user: str) -> str:
            self.placed += 1
            order = {"order_id": f"o-{user}-{time.monotonic_ns()}", "user": user}
            event = {
                "version": "2.0",
                "rawPath": "/orders",
                "headers": {"x-user-id": user, "content-type": "application/json"},
                "requestContext": {"http": {"method": "POST", "path": "/orders"}},
                "body": json.dumps(order),
                "isBase64Encoded": False,
            }
            answer = self.lam.invoke(
                FunctionName="api", Qualifier="live", Payload=json.dumps(event)
            )
            assert answer.get("FunctionError") is None, answer["Payload"].read()
            response = json.loads(answer["Payload"].read())
            assert response["statusCode"] == 201, response
            return str(json.loads(response["body"])["channel"])

        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, users))

    def drain(self) -> None:
        """Play the two event source mappings until every order placed is accounted for."""
        deadline = time.monotonic() + 60
        while len(CHAINS) + len(FAILURES) < self.placed:
            assert time.monotonic() < deadline, (len(CHAINS), len(FAILURES), self.placed)
            self._kinesis_batch()
            self._sqs_batch()

    def _kinesis_batch(self) -> None:
        out = self.kinesis.get_records(ShardIterator=self.iterator, Limit=100)
        self.iterator = out["NextShardIterator"]
        records = [
            kinesis_record(r["SequenceNumber"], r["Data"], partition_key=r["PartitionKey"])
            for r in out["Records"]
        ]
        if records:
            self._invoke("notify-user", records)

    def _sqs_batch(self) -> None:
        out = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        )
        messages = out.get("Messages", [])
        if not messages:
            return
        records = []
        for m in messages:
            attrs = m.get("MessageAttributes", {})
            records.append(
                sqs_record(
                    m["MessageId"],
                    m["Body"],
                    user=attrs.get("coalmine-user", {}).get("StringValue"),
                    baggage=attrs.get("baggage", {}).get("StringValue"),
                )
            )
        self._invoke("send-email", records)
        for m in messages:
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])

    def _invoke(self, function: str, records: list[dict[str, Any]]) -> None:
        answer = self.lam.invoke(
            FunctionName=function, Qualifier="live", Payload=json.dumps({"Records": records})
        )
        assert answer.get("FunctionError") is None, answer["Payload"].read()
        # a failed record stays failed here (the article's bug is not retried away)
        json.loads(answer["Payload"].read())

    def advance(self, release_id: str, at: float) -> None:
        self.plane.service.releases.advance(release_id, Tick(at))


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    CHAINS.clear()
    FAILURES.clear()
    plane = ControlPlane(f"sqlite:///{tmp_path / 'plane.db'}")
    plane.start()
    plane.seed(_spec())
    ref = "tests.aws.article_chain:"
    local = LocalLambda(
        {
            name: LambdaFunction(
                name, {"1": ref + h, "2": ref + h}, aliases={"live": "1"}, timeout=30
            )
            for name, h in FUNCTIONS.items()
        }
    )
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    moto.start()
    moto_url = f"http://127.0.0.1:{moto._port}"
    httpx.post(f"{moto_url}/moto-api/reset").raise_for_status()  # moto keeps state per process
    try:
        with (
            serve_in_thread(local, http=PROTOCOL) as lambda_url,
            fake_aws_env(
                AWS_ENDPOINT_URL_LAMBDA=lambda_url,
                AWS_ENDPOINT_URL_KINESIS=moto_url,
                AWS_ENDPOINT_URL_SQS=moto_url,
                COALMINE_URL=plane.url,
                COALMINE_SDK_KEY=plane.sdk_key(APP),
                COALMINE_SIGNING_KEYS=KEYS,
                COALMINE_MAX_AGE="0",  # every invocation asks (a 304 when unchanged): no waiting
            ),
        ):
            kinesis, sqs = boto3.client("kinesis"), boto3.client("sqs")
            kinesis.create_stream(StreamName="orders", ShardCount=1)
            shard = kinesis.describe_stream(StreamName="orders")["StreamDescription"]["Shards"][0]
            iterator = kinesis.get_shard_iterator(
                StreamName="orders", ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            queue_url = sqs.create_queue(QueueName="emails")["QueueUrl"]
            with fake_aws_env(EMAILS_QUEUE_URL=queue_url):
                lam = boto3.client("lambda")
                yield Stack(plane, lam, kinesis, sqs, queue_url, iterator)
                lam.close()
            kinesis.close()
            sqs.close()
    finally:
        close_opened()
        local.close()
        moto.stop()
        plane.stop()


def _start(stack: Stack, route_mode: str) -> tuple[str, str]:
    changes = dict.fromkeys(FUNCTIONS, "v2")
    release = stack.plane.service.releases.start(
        APP,
        ReleaseCreate(candidate=changes, route_mode=route_mode),
        "e2e",  # type: ignore[arg-type]
    )
    stack.advance(release.id, time.time())
    assert stack.plane.service.releases.get(release.id).exposure == 2000
    salt = stack.plane.snapshot(APP).state.release.salt  # type: ignore[union-attr]
    return release.id, salt


@pytest.fixture(params=["in-function", "gateway"])
def entry(request: pytest.FixtureRequest, stack: Stack) -> Iterator[Stack]:
    """Orders enter through the stable alias (in-function routing) or through the gateway."""
    if request.param == "in-function":
        yield stack
        return
    config = GatewayConfig(
        app=APP,
        control_plane_url=stack.plane.url,
        sdk_key=stack.plane.sdk_key(APP),
        keyring=keyring_from_env(),
        identity=IdentityConfig(user_header="x-user-id"),
    )
    port = free_port()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server, thread = start_uvicorn(create_gateway(config), sock, start_timeout=20)
    stack.gateway_url = f"http://127.0.0.1:{port}"
    try:
        yield stack
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def test_user_mode_keeps_every_chain_on_one_channel_through_every_hop(entry: Stack) -> None:
    stack = entry
    rid, salt = _start(stack, "user")
    users = [f"user-{i}" for i in range(40)]
    first = dict(zip(users, stack.place(users), strict=True))
    stack.advance(rid, time.time() + 3601)  # 20% -> 60% while the first orders are in flight
    assert stack.plane.service.releases.get(rid).exposure == 6000
    stack.drain()
    at_20 = list(CHAINS)
    # one at a time, as a Lambda environment serves them: each sees the raise at once
    second = dict(zip(users, stack.place(users, workers=1), strict=True))
    stack.drain()

    assert FAILURES == [], "no order fails in user mode"
    assert len(CHAINS) == 2 * len(users)
    for user, chain in CHAINS:
        assert [fn for fn, _ in chain] == ["api", "price", "notify-user", "send-email"]
        versions = {v for _, v in chain}
        assert len(versions) == 1, f"{user}'s chain mixed versions: {chain}"
    for user, chain in at_20:
        want = "v2" if first[user] == "canary" else "v1"
        assert chain[0][1] == want, "a chain placed at 20% keeps its channel after the raise"
        assert (bucket(salt, user) < 2000) == (want == "v2")
    grown = [u for u in users if 2000 <= bucket(salt, u) < 6000]
    assert grown, "some users join the cohort at 60%"
    wrong = {
        user: (second[user], bucket(salt, user))
        for user in users
        if second[user] != ("canary" if bucket(salt, user) < 6000 else "stable")
    }
    assert wrong == {}, "at 60% a user is canary exactly when their bucket is under 6000"


def test_request_mode_mixes_chains_and_fails_on_the_missing_delivery_eta(stack: Stack) -> None:
    _start(stack, "request")
    users = [f"user-{i}" for i in range(60)]
    stack.place(users)
    stack.drain()
    mixed = [chain for _, chain in CHAINS if len({v for _, v in chain}) > 1]
    assert mixed, "request mode sends one order through both versions"
    assert any("delivery_eta" in why for _, why in FAILURES), FAILURES
