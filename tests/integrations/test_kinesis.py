"""KinesisStream beyond the contract: the envelope as a plain consumer sees it, checkpoints."""

from __future__ import annotations

import base64
import json
import sys
import uuid
from typing import Any

import pytest

from coalmine._extras import MissingExtraError
from coalmine.integrations import KinesisStream
from coalmine.integrations.kinesis import NO_KEY
from coalmine.sdk.publish import publish


def _read_all(client: Any, topic: str) -> list[dict[str, Any]]:
    out = []
    for shard in client.list_shards(StreamName=topic)["Shards"]:
        it = client.get_shard_iterator(
            StreamName=topic, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        out += client.get_records(ShardIterator=it)["Records"]
    return out


def test_a_plain_kinesis_consumer_reads_the_envelope_as_json(kinesis_client: Any) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    stream = KinesisStream(kinesis_client, shards=2)
    publish(stream, topic, {"order_id": "o-1"}, key="alice", token="tok.en")
    (record,) = _read_all(kinesis_client, topic)
    assert record["PartitionKey"] == "alice"
    assert json.loads(record["Data"]) == {
        "coalmine": 1,
        "baggage": "coalmine=tok.en",
        "user": "alice",
        "payload": {"order_id": "o-1"},
    }
    # what a Lambda event source mapping hands a function: base64 of the same bytes
    assert base64.b64decode(base64.b64encode(record["Data"])) == record["Data"]


def test_records_without_a_key_spread_and_read_back_without_one(kinesis_client: Any) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    stream = KinesisStream(kinesis_client, shards=2, poll_interval=0.01)
    for _ in range(40):
        stream.publish(topic, b"x")
    raw = _read_all(kinesis_client, topic)
    assert {r["PartitionKey"] for r in raw} == {NO_KEY}
    got = stream.consume(topic, "g", "c", max_records=100, timeout=1)
    assert len(got) == 40
    assert {r.key for r in got} == {None}
    assert len({r.partition for r in got}) == 2  # random explicit hash keys use both shards


def test_the_checkpoint_advances_over_acked_records_only(kinesis_client: Any) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    stream = KinesisStream(kinesis_client, shards=1, poll_interval=0.01)
    for i in range(4):
        stream.publish(topic, str(i).encode(), key="k")
    got = stream.consume(topic, "g", "c", max_records=10, timeout=1)
    assert [r.data for r in got] == [b"0", b"1", b"2", b"3"]
    assert stream.checkpoint(topic, "g") == {}
    stream.ack(topic, "g", [got[0], got[2]])
    assert stream.checkpoint(topic, "g") == {got[0].partition: got[0].sequence}
    stream.ack(topic, "g", [got[1]])
    assert stream.checkpoint(topic, "g") == {got[0].partition: got[2].sequence}


def test_a_missing_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(MissingExtraError, match=r"coalmine\[aws\]"):
        KinesisStream()
