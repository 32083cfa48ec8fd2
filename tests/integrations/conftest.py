"""Every stream implementation, made the same way, for the contract suite.

``make_stream(**options)`` builds the implementation under test (real NATS and
Redis servers, moto for Kinesis); ``topic`` is a fresh topic, deleted after.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from coalmine.core.ports import Stream
from tests.services import need

IMPLEMENTATIONS = ["memory", "memory-headerless", "nats", "redis", "kinesis"]
MakeStream = Callable[..., Stream]


@pytest.fixture(scope="module")
def aws_credentials() -> Iterator[None]:
    """Fake credentials for moto, set for one module's tests only."""
    mp = pytest.MonkeyPatch()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        mp.setenv(name, value)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def kinesis_client(aws_credentials: None) -> Iterator[Any]:
    """A boto3 Kinesis client on moto, shared by a module's tests (topics are unique)."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("kinesis", region_name="us-east-1")
        yield client
        client.close()


def factory(kind: str, request: pytest.FixtureRequest) -> MakeStream:
    """A function making streams of ``kind``; the streams are closed after the test."""
    made: list[Any] = []

    def make(**options: Any) -> Stream:
        stream: Any
        if kind == "memory":
            from coalmine.integrations import MemoryStream

            stream = MemoryStream(**options)
        elif kind == "memory-headerless":
            from coalmine.integrations import MemoryStream

            stream = MemoryStream(supports_headers=False, **options)
        elif kind == "nats":
            from coalmine.integrations import NatsJetStream

            stream = NatsJetStream(storage="memory", **options)
        elif kind == "redis":
            from coalmine.integrations import RedisStream

            stream = RedisStream(**options)
        elif kind == "kinesis":
            from coalmine.integrations import KinesisStream

            options.setdefault("shards", 2)
            options.setdefault("poll_interval", 0.02)
            client = request.getfixturevalue("kinesis_client")
            stream = KinesisStream(client, **options)
        else:  # pragma: no cover
            raise ValueError(kind)
        made.append(stream)
        return stream

    def close_all() -> None:
        for stream in made:
            stream.close()

    request.addfinalizer(close_all)
    return make


def prepare(kind: str, request: pytest.FixtureRequest) -> None:
    """Skip (or fail) when the broker is not there; start moto for Kinesis."""
    if kind in ("nats", "redis"):
        need(kind)
    if kind == "kinesis":
        request.getfixturevalue("kinesis_client")


@pytest.fixture(params=IMPLEMENTATIONS)
def kind(request: pytest.FixtureRequest) -> str:
    prepare(request.param, request)
    return str(request.param)


@pytest.fixture
def make_stream(kind: str, request: pytest.FixtureRequest) -> MakeStream:
    return factory(kind, request)


@pytest.fixture
def topic(make_stream: MakeStream) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:12]}"
    yield name
    cleaner: Any = make_stream()
    cleaner.delete_topic(name)
