"""`RedisStream`: the stream port on Redis Streams (needs ``coalmine[redis]``).

A topic is a Redis stream (the key is the topic name). Each record is one
entry whose fields are

* ``data``: the record's bytes;
* ``key``: the record key, when given;
* ``h:<name>``: one field per header, e.g. ``h:baggage`` for the routing context.

A consumer group is a Redis consumer group (created at the start of the
stream on first use), read with ``XREADGROUP`` and acked with ``XACK``.
Entries a consumer read and did not ack within ``ack_wait`` seconds are
claimed by the next `consume` of any consumer of the group (``XAUTOCLAIM``),
so a crashed consumer's records are not lost. A Redis stream is one ordered
log: every record is in partition ``"0"`` and its sequence is the entry id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from coalmine._extras import require
from coalmine.core.ports import Record, require_bytes
from coalmine.integrations._checks import check_ack_wait, check_max_records, check_topic

__all__ = ["DATA_FIELD", "DEFAULT_REDIS_URL", "HEADER_PREFIX", "KEY_FIELD", "RedisStream"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DATA_FIELD = "data"
KEY_FIELD = "key"
HEADER_PREFIX = "h:"

_DATA, _KEY, _PREFIX = DATA_FIELD.encode(), KEY_FIELD.encode(), HEADER_PREFIX.encode()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class RedisStream:
    """A `coalmine.core.ports.Stream` on Redis Streams.

    Give a ``url`` or a ``redis.Redis`` ``client`` (made with
    ``decode_responses=False``). ``maxlen`` caps each stream (approximately,
    ``XADD MAXLEN ~``); by default streams grow until trimmed.
    """

    supports_headers: bool = True

    def __init__(
        self,
        url: str = DEFAULT_REDIS_URL,
        *,
        client: Any = None,
        ack_wait: float = 30.0,
        maxlen: int | None = None,
    ) -> None:
        redis = require("redis", "redis")
        check_ack_wait(ack_wait)
        self._redis = client if client is not None else redis.Redis.from_url(url)
        self._response_error = redis.exceptions.ResponseError
        self.ack_wait = ack_wait
        self.maxlen = maxlen
        self._groups: set[tuple[str, str]] = set()

    def publish(
        self,
        topic: str,
        data: bytes,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        require_bytes(data)
        check_topic(topic)
        fields: dict[str, bytes | str] = {DATA_FIELD: bytes(data)}
        if key is not None:
            fields[KEY_FIELD] = key
        for name, value in (headers or {}).items():
            fields[HEADER_PREFIX + name] = value
        if self.maxlen is None:
            entry = self._redis.xadd(topic, fields)
        else:
            entry = self._redis.xadd(topic, fields, maxlen=self.maxlen, approximate=True)
        return _text(entry)

    def _ensure_group(self, topic: str, group: str) -> None:
        if (topic, group) in self._groups:
            return
        try:
            self._redis.xgroup_create(topic, group, id="0", mkstream=True)
        except self._response_error as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add((topic, group))

    def consume(
        self, topic: str, group: str, consumer: str, *, max_records: int, timeout: float
    ) -> list[Record]:
        check_max_records(max_records)
        self._ensure_group(topic, group)
        try:
            entries = self._read(topic, group, consumer, max_records, timeout)
        except self._response_error as exc:
            if "NOGROUP" not in str(exc):
                raise
            # the stream (and so the group) was deleted meanwhile: start afresh
            self._groups.discard((topic, group))
            self._ensure_group(topic, group)
            entries = self._read(topic, group, consumer, max_records, timeout)
        return [self._record(topic, entry_id, fields) for entry_id, fields in entries]

    def _read(
        self, topic: str, group: str, consumer: str, max_records: int, timeout: float
    ) -> list[tuple[Any, Any]]:
        entries: list[tuple[Any, Any]] = []
        claimed = self._redis.xautoclaim(
            topic,
            group,
            consumer,
            min_idle_time=int(self.ack_wait * 1000),
            start_id="0-0",
            count=max_records,
        )
        entries.extend(e for e in claimed[1] if e[1])  # a trimmed entry comes back empty
        if len(entries) < max_records:
            block = None if entries or timeout <= 0 else max(int(timeout * 1000), 1)
            got = self._redis.xreadgroup(
                group, consumer, {topic: ">"}, count=max_records - len(entries), block=block
            )
            for _stream, items in got or ():
                entries.extend(items)
        return entries

    @staticmethod
    def _record(topic: str, entry_id: bytes | str, fields: Mapping[bytes, bytes]) -> Record:
        headers = {
            _text(name[len(_PREFIX) :]): _text(value)
            for name, value in fields.items()
            if name.startswith(_PREFIX)
        }
        key = fields.get(_KEY)
        return Record(
            topic,
            "0",
            _text(entry_id),
            bytes(fields.get(_DATA, b"")),
            headers,
            _text(key) if key is not None else None,
        )

    def ack(self, topic: str, group: str, records: Sequence[Record]) -> None:
        if records:
            self._redis.xack(topic, group, *[r.sequence for r in records])

    # beyond the port -----------------------------------------------------------

    def delete_topic(self, topic: str) -> None:
        """Delete the topic's stream (and so its groups)."""
        self._redis.delete(topic)
        self._groups = {g for g in self._groups if g[0] != topic}

    def close(self) -> None:
        self._redis.close()

    def __enter__(self) -> RedisStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
