"""open_stream: a stream from a URL; an unknown scheme is an error, never a default."""

from __future__ import annotations

from typing import Any

import pytest

from coalmine.core.ports import Stream
from coalmine.integrations import (
    KinesisStream,
    MemoryStream,
    NatsJetStream,
    RedisStream,
    open_stream,
)
from tests.services import need


def test_memory() -> None:
    s = open_stream("memory:?partitions=2")
    assert isinstance(s, MemoryStream)
    assert s.partitions == 2


def test_nats_and_redis() -> None:
    need("nats")
    need("redis")
    for url, cls in (
        ("nats://127.0.0.1:4222", NatsJetStream),
        ("redis://127.0.0.1:6379/0", RedisStream),
    ):
        s: Any = open_stream(url)
        try:
            assert isinstance(s, cls)
            assert isinstance(s, Stream)
        finally:
            s.close()


def test_kinesis(kinesis_client: Any) -> None:
    s: Any = open_stream("kinesis:?region=us-east-1&shards=3")
    try:
        assert isinstance(s, KinesisStream)
        assert s.shards == 3
    finally:
        s.close()


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown stream URL scheme 'kafka'.*memory, nats"):
        open_stream("kafka://127.0.0.1:9092")
