"""Adapters from coalmine's ports to the outside world: event streams so far.

Each adapter implements a Protocol of `coalmine.core.ports` and imports only
``coalmine.core`` and its own client library, which is an extra imported on
first use (a missing one says which extra to install):

=================  =====================  =================  ===========
class              broker                 record headers     extra
=================  =====================  =================  ===========
`MemoryStream`     in process (default)   yes (optional)     none
`NatsJetStream`    NATS JetStream         NATS headers       ``nats``
`RedisStream`      Redis Streams          ``h:<name>``       ``redis``
`KinesisStream`    Kinesis Data Streams   none (envelope)    ``aws``
=================  =====================  =================  ===========

`open_stream` makes one from a URL.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from coalmine.core.ports import Stream
from coalmine.integrations.kinesis import KinesisStream
from coalmine.integrations.memory import MemoryStream
from coalmine.integrations.nats import NatsJetStream
from coalmine.integrations.redis_streams import RedisStream

__all__ = [
    "SCHEMES",
    "KinesisStream",
    "MemoryStream",
    "NatsJetStream",
    "RedisStream",
    "open_stream",
]

SCHEMES = ("memory", "nats", "redis", "rediss", "kinesis")


def open_stream(url: str, **options: Any) -> Stream:
    """A stream for ``url``; ``options`` go to the class. Unknown schemes raise ValueError.

    * ``memory:`` (query: ``partitions``) — a new, empty `MemoryStream`;
    * ``nats://host:4222`` — `NatsJetStream`;
    * ``redis://host:6379/0`` (or ``rediss://``) — `RedisStream`;
    * ``kinesis:`` (query: ``region``, ``endpoint``, ``shards``) — `KinesisStream`.
    """
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    scheme = parts.scheme.lower()
    if scheme == "memory":
        if "partitions" in query:
            options.setdefault("partitions", int(query["partitions"]))
        return MemoryStream(**options)
    if scheme == "nats":
        return NatsJetStream(url, **options)
    if scheme in ("redis", "rediss"):
        return RedisStream(url, **options)
    if scheme == "kinesis":
        if "region" in query:
            options.setdefault("region_name", query["region"])
        if "endpoint" in query:
            options.setdefault("endpoint_url", query["endpoint"])
        if "shards" in query:
            options.setdefault("shards", int(query["shards"]))
        return KinesisStream(**options)
    raise ValueError(
        f"unknown stream URL scheme {parts.scheme!r} in {url!r}: use one of {', '.join(SCHEMES)}"
    )
