"""Brokers for the stream scenarios: the same factory as the contract suite."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integrations.conftest import (  # noqa: F401  (fixtures)
    MakeStream,
    aws_credentials,
    factory,
    kinesis_client,
    prepare,
)

BROKERS = ["memory", "nats", "redis", "kinesis"]


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest) -> str:
    prepare(request.param, request)
    return str(request.param)


@pytest.fixture
def make_stream(broker: str, request: pytest.FixtureRequest) -> MakeStream:
    return factory(broker, request)


@pytest.fixture
def topic(make_stream: MakeStream) -> Iterator[str]:
    name = f"orders-{uuid.uuid4().hex[:12]}"
    yield name
    cleaner: Any = make_stream()
    cleaner.delete_topic(name)
