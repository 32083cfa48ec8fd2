"""The SDK inside a Lambda (detected from the standard environment, no setting): the handler
decorator records the coalmine version of the running Lambda version, writes EMF lines to
stdout, and flushes to the real control plane in the background after the invocation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from coalmine.core.errors import InvalidInput
from coalmine.core.model import Channel
from coalmine.core.routing import decide
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.metrics import Flusher
from coalmine.metrics.lambda_flush import LambdaFlusher
from coalmine.sdk import Client
from coalmine.sdk.lambda_env import LambdaEnvironment, lambda_qualifier, running_version
from tests.metrics.test_emf import validate_emf
from tests.sdk import APP, KEYRING, MockPlane, make_snapshot, serving

ARN = "arn:aws:lambda:us-east-1:123456789012:function:{}:{}"
SHOP_ON_LAMBDA = {
    "app": APP,
    "functions": {
        "api": {
            "versions": {"v1": ARN.format("shop-api", 6), "v2": ARN.format("shop-api", 7)},
            "current": "v1",
        },
        "worker": {"versions": {"v1": ARN.format("shop-worker", 3)}, "current": "v1"},
    },
    "release": {"strategy": "30%:10m, 100%"},
}
LAMBDA_ENV = {
    "AWS_LAMBDA_FUNCTION_NAME": "shop-api",
    "AWS_LAMBDA_FUNCTION_VERSION": "7",
    "AWS_REGION": "us-east-1",
}


def in_lambda(monkeypatch: pytest.MonkeyPatch, **extra: str) -> None:
    for name, value in {**LAMBDA_ENV, **extra}.items():
        monkeypatch.setenv(name, value)


def emf_lines(out: str) -> list[dict[str, Any]]:
    docs = [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]
    for doc in docs:
        validate_emf(doc)
    return docs


def user_in(snapshot: RoutingSnapshot, channel: Channel) -> str:
    return next(f"u{i}" for i in range(1000) if decide(snapshot.state, f"u{i}").channel is channel)


def test_in_a_lambda_the_decorator_records_the_running_version_emits_emf_and_flushes(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    in_lambda(monkeypatch)
    with serving(sqlite_url) as plane:
        plane.seed(SHOP_ON_LAMBDA)
        plane.start_release()  # api v1 -> v2 at 30%
        snap = plane.snapshot()
        canary, stable = user_in(snap, Channel.CANARY), user_in(snap, Channel.STABLE)
        with Client(
            plane.url,
            plane.sdk_key(),
            apps=[APP],
            signing_keys=KEYRING,
            lambda_flush_interval=1e-6,  # every invocation may flush: the test sees each one
        ) as client:
            assert isinstance(client.flusher, LambdaFlusher)
            assert client.emf is not None

            @client.handler(APP, user="x-user-id", function="api")
            def api(event: dict[str, Any], context: object) -> dict[str, Any]:
                return {"statusCode": 500 if event["headers"].get("x-fail") else 200}

            api({"headers": {"x-user-id": canary}}, None)
            assert client.flusher.wait_idle(5)
            api({"headers": {"x-user-id": canary, "x-fail": "1"}}, None)
            assert client.flusher.wait_idle(5)
            # a stable user on Lambda version 7 ran v2 (say, a stale alias): v2 is what ran
            api({"headers": {"x-user-id": stable}}, None)
            assert client.flusher.wait_idle(5)
            assert client.flusher.flushes_started == 3

            store = plane.service.metrics
            got = store.metrics_for(APP, "api", "v2", "canary", since=0)
            assert (got.requests, got.errors, got.histogram.count) == (2, 1, 2)
            got = store.metrics_for(APP, "api", "v2", "stable", since=0)
            assert (got.requests, got.errors) == (1, 0)
            assert store.metrics_for(APP, "api", "v1", "stable", since=0).requests == 0

    docs = emf_lines(capsys.readouterr().out)
    assert len(docs) == 3  # one line per invocation (one series each)
    assert [(d["version"], d["channel"], d["requests"], d["errors"]) for d in docs] == [
        ("v2", "canary", 1, 0),
        ("v2", "canary", 1, 1),
        ("v2", "stable", 1, 0),
    ]
    assert all(d["app"] == APP and d["function"] == "api" for d in docs)
    assert all(isinstance(d["latency"], float) for d in docs)


def test_a_batch_writes_one_emf_line_per_series(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    in_lambda(monkeypatch, COALMINE_EMF_NAMESPACE="shop/prod")
    mock = MockPlane(make_snapshot(1))
    with Client("http://plane", "sdk-key", apps=[APP], stream=False, http=mock.http()) as client:

        @client.handler(APP, user="user", function="worker")
        def worker(event: dict[str, Any], context: object) -> dict[str, Any]:
            return {"batchItemFailures": [{"itemIdentifier": "m1"}]}

        records = [
            {"messageId": f"m{i}", "messageAttributes": {"user": {"stringValue": f"u{i}"}}}
            for i in range(40)
        ]
        worker({"Records": records}, None)
    docs = emf_lines(capsys.readouterr().out)
    assert {d["_aws"]["CloudWatchMetrics"][0]["Namespace"] for d in docs} == {"shop/prod"}
    assert sum(d["requests"] for d in docs) == 40
    assert sum(d["errors"] for d in docs) == 1
    assert len(docs) == len({d["channel"] for d in docs})  # one per (version, channel)
    assert all("latency" not in d for d in docs)  # the records share one duration


def test_outside_lambda_the_timer_flusher_and_no_emf_unless_asked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in LAMBDA_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("COALMINE_EMF", raising=False)
    mock = MockPlane(make_snapshot(1))

    def client() -> Client:
        return Client(
            "http://plane", "sdk-key", apps=[APP], stream=False, http=mock.http(),
            flush_interval=3600,
        )  # fmt: skip

    with client() as c:
        assert type(c.flusher) is Flusher
        assert c.emf is None
        assert c.lambda_env is None
        c.record(APP, "api", "v1", "stable", 3.0)
        c.after_invocation()
    assert emf_lines(capsys.readouterr().out) == []
    monkeypatch.setenv("COALMINE_EMF", "1")
    with client() as c:
        c.record(APP, "api", "v1", "stable", 3.0)
        c.after_invocation()
    assert [d["requests"] for d in emf_lines(capsys.readouterr().out)] == [1]
    monkeypatch.setenv("COALMINE_EMF", "sometimes")
    with pytest.raises(InvalidInput, match="COALMINE_EMF"):
        client()


def test_emf_can_be_turned_off_inside_lambda(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    in_lambda(monkeypatch, COALMINE_EMF="0")
    mock = MockPlane(make_snapshot(1))
    with Client("http://plane", "sdk-key", apps=[APP], stream=False, http=mock.http()) as c:
        assert c.emf is None
        assert isinstance(c.flusher, LambdaFlusher)


def test_the_reverse_lookup_of_the_running_version() -> None:
    base = make_snapshot(1)
    targets = {
        "api": {
            "v1": ARN.format("shop-api", 6),
            "v2": "lambda:shop-api:7",
            "v3": ARN.format("shop-api", "live"),
            "v4": "shop.api:handler",
        }
    }
    snap = RoutingSnapshot(base.state, 2, targets)
    env = LambdaEnvironment.detect(LAMBDA_ENV)
    assert env == LambdaEnvironment("shop-api", "7", "us-east-1")
    assert LambdaEnvironment.detect({}) is None
    assert running_version(snap, "api", env) == "v2"
    assert running_version(snap, "api", LambdaEnvironment("shop-api", "6", "us-east-1")) == "v1"
    assert running_version(snap, "api", LambdaEnvironment("shop-api", "6", "eu-west-1")) is None
    assert running_version(snap, "api", LambdaEnvironment("other", "7")) is None
    assert running_version(snap, "worker", env) is None
    assert running_version(None, "api", env) is None
    assert running_version(snap, "api", None) is None
    assert lambda_qualifier("shop.api:handler") is None
    assert lambda_qualifier("https://x/y") is None
    assert lambda_qualifier(ARN.format("f", "$LATEST")) == ("us-east-1", "f", "$LATEST")
