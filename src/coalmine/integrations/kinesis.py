"""`KinesisStream`: the stream port on Amazon Kinesis Data Streams (needs ``coalmine[aws]``).

Kinesis records have no headers (``supports_headers`` is False): the routing
context travels inside the data, in the envelope of `coalmine.sdk.envelope`
(`coalmine.sdk.publish` wraps it). The record key is the Kinesis partition
key, which picks the shard; a record published without a key gets the
partition key ``coalmine-no-key`` and a random explicit hash key (so records
still spread over shards) and reads back with ``key=None``.

A partition is a shard; a sequence is the Kinesis sequence number.

Consumer groups: Kinesis has none. Here a group is an application name whose
position in each shard (the shard iterators, the records delivered and not
yet acked, the checkpoint) is kept **in memory, in this object**: several
consumers of one group in one process share its records, but two processes
(or a restart) do not share positions; a new group starts at the oldest
record (``TRIM_HORIZON``). In production the consumer of a Kinesis stream is
usually Lambda's own event source mapping, which keeps the checkpoints and
hands the function batches (read them with ``coalmine.sdk.handler``), or
the Kinesis Client Library with its lease table; this class is for
producers, scripts and tests.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from coalmine._extras import require
from coalmine.core.errors import InvalidInput
from coalmine.core.ports import Record, require_bytes
from coalmine.integrations._checks import (
    check_ack_wait,
    check_max_records,
    check_topic,
    refuse_headers,
)
from coalmine.integrations.memory import DEFAULT_ACK_WAIT, InFlight

__all__ = ["NO_KEY", "KinesisStream"]

NO_KEY = "coalmine-no-key"
"""the partition key of records published without a key"""
_HASH_SPACE = 2**128


@dataclass
class _Shard:
    iterator: str | None = None
    last: str | None = None
    """the sequence number of the last record read, to resume after an expired iterator"""
    closed: bool = False
    delivered: deque[str] = field(default_factory=deque)
    acked: set[str] = field(default_factory=set)
    checkpoint: str | None = None


@dataclass
class _Group:
    inflight: InFlight
    shards: dict[str, _Shard] = field(default_factory=dict)
    turn: int = 0


class KinesisStream:
    """A `coalmine.core.ports.Stream` on Kinesis (see the module for what a group is here).

    Give a boto3 Kinesis ``client``, or ``region_name`` / ``endpoint_url``
    for one to be made. A topic is a stream name; a missing stream is created
    with ``shards`` shards on first use. ``poll_interval`` is how long
    `consume` sleeps between rounds of ``GetRecords`` that found nothing
    (Kinesis allows five calls per second per shard).
    """

    supports_headers: bool = False

    def __init__(
        self,
        client: Any = None,
        *,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        shards: int = 1,
        ack_wait: float = DEFAULT_ACK_WAIT,
        poll_interval: float = 0.2,
    ) -> None:
        self._owns_client = client is None
        if client is None:
            boto3 = require("boto3", "aws")
            client = boto3.client("kinesis", region_name=region_name, endpoint_url=endpoint_url)
        if shards < 1:
            raise InvalidInput("a stream needs at least one shard")
        check_ack_wait(ack_wait)
        self._client = client
        self.shards = shards
        self.ack_wait = ack_wait
        self.poll_interval = poll_interval
        self._streams: set[str] = set()
        self._groups: dict[tuple[str, str], _Group] = {}
        self._lock = threading.RLock()

    def _ensure_stream(self, topic: str) -> None:
        if topic in self._streams:
            return
        check_topic(topic)
        errors = self._client.exceptions
        try:
            self._client.describe_stream_summary(StreamName=topic)
        except errors.ResourceNotFoundException:
            # ResourceInUse: created meanwhile by another producer
            with contextlib.suppress(errors.ResourceInUseException):
                self._client.create_stream(StreamName=topic, ShardCount=self.shards)
            self._client.get_waiter("stream_exists").wait(
                StreamName=topic, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
            )
        self._streams.add(topic)

    def publish(
        self,
        topic: str,
        data: bytes,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        require_bytes(data)
        refuse_headers(headers, "Kinesis records have no headers")
        self._ensure_stream(topic)
        args: dict[str, Any] = {"StreamName": topic, "Data": bytes(data)}
        if key is None:
            args["PartitionKey"] = NO_KEY
            args["ExplicitHashKey"] = str(secrets.randbelow(_HASH_SPACE))
        else:
            args["PartitionKey"] = key
        return str(self._client.put_record(**args)["SequenceNumber"])

    # consuming -----------------------------------------------------------------

    def _group(self, topic: str, group: str) -> _Group:
        g = self._groups.get((topic, group))
        if g is None:
            self._ensure_stream(topic)
            g = self._groups[topic, group] = _Group(InFlight(self.ack_wait, time.monotonic))
        if not g.shards or all(s.closed for s in g.shards.values()):
            self._refresh_shards(topic, g)
        return g

    def _refresh_shards(self, topic: str, g: _Group) -> None:
        args: dict[str, Any] = {"StreamName": topic}
        while True:
            page = self._client.list_shards(**args)
            for shard in page.get("Shards", []):
                g.shards.setdefault(shard["ShardId"], _Shard())
            token = page.get("NextToken")
            if not token:
                return
            args = {"NextToken": token}

    def _iterator(self, topic: str, shard_id: str, shard: _Shard) -> str:
        if shard.iterator is None:
            args: dict[str, Any] = {"StreamName": topic, "ShardId": shard_id}
            if shard.last is None:
                args["ShardIteratorType"] = "TRIM_HORIZON"
            else:
                args["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
                args["StartingSequenceNumber"] = shard.last
            shard.iterator = self._client.get_shard_iterator(**args)["ShardIterator"]
        return shard.iterator

    def _read(self, topic: str, shard_id: str, shard: _Shard, limit: int) -> list[Record]:
        errors = self._client.exceptions
        try:
            page = self._client.get_records(
                ShardIterator=self._iterator(topic, shard_id, shard), Limit=min(limit, 10000)
            )
        except errors.ExpiredIteratorException:
            shard.iterator = None
            return []
        except errors.ProvisionedThroughputExceededException:
            return []
        shard.iterator = page.get("NextShardIterator")
        if shard.iterator is None:
            shard.closed = True  # a closed parent shard after resharding
        out = []
        for item in page.get("Records", []):
            key = item.get("PartitionKey")
            out.append(
                Record(
                    topic,
                    shard_id,
                    item["SequenceNumber"],
                    bytes(item["Data"]),
                    None,
                    None if key == NO_KEY else key,
                )
            )
        if out:
            shard.last = out[-1].sequence
        return out

    def consume(
        self, topic: str, group: str, consumer: str, *, max_records: int, timeout: float
    ) -> list[Record]:
        """Read the group's shards in turn (``consumer`` only names the caller)."""
        check_max_records(max_records)
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            with self._lock:
                g = self._group(topic, group)
                out = g.inflight.expired(max_records)
                ids = [s for s, shard in g.shards.items() if not shard.closed]
                g.turn += 1
                for i in range(len(ids)):
                    if len(out) >= max_records:
                        break
                    shard_id = ids[(g.turn + i) % len(ids)]
                    shard = g.shards[shard_id]
                    got = self._read(topic, shard_id, shard, max_records - len(out))
                    for record in got:
                        g.inflight.deliver(record)
                        shard.delivered.append(record.sequence)
                    out.extend(got)
            remaining = deadline - time.monotonic()
            if out or remaining <= 0:
                return out
            time.sleep(min(self.poll_interval, remaining))

    def ack(self, topic: str, group: str, records: Sequence[Record]) -> None:
        with self._lock:
            g = self._groups.get((topic, group))
            if g is None:
                return
            for record in records:
                if not g.inflight.ack(record):
                    continue
                shard = g.shards.get(record.partition)
                if shard is None:
                    continue
                shard.acked.add(record.sequence)
                while shard.delivered and shard.delivered[0] in shard.acked:
                    shard.checkpoint = shard.delivered.popleft()
                    shard.acked.discard(shard.checkpoint)

    # beyond the port -----------------------------------------------------------

    def checkpoint(self, topic: str, group: str) -> dict[str, str]:
        """Per shard, the last sequence number up to which ``group`` acked every record."""
        with self._lock:
            g = self._groups.get((topic, group))
            if g is None:
                return {}
            return {s: sh.checkpoint for s, sh in g.shards.items() if sh.checkpoint is not None}

    def delete_topic(self, topic: str) -> None:
        """Delete the Kinesis stream (and forget this object's groups of it)."""
        with self._lock:
            self._streams.discard(topic)
            for k in [k for k in self._groups if k[0] == topic]:
                del self._groups[k]
        with contextlib.suppress(self._client.exceptions.ResourceNotFoundException):
            self._client.delete_stream(StreamName=topic, EnforceConsumerDeletion=True)

    def close(self) -> None:
        """Close the boto3 client, unless it was given (its owner closes it)."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> KinesisStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
