"""`NatsJetStream`: the stream port on NATS JetStream (needs ``coalmine[nats]``).

A topic is a JetStream stream named ``<prefix>_<topic>`` that holds the
subject ``<prefix>.<topic>``; a consumer group is a durable pull consumer of
that stream named after the group, so any number of processes that consume
with the same group share its records. Headers are NATS message headers; the
record key travels in the ``coalmine-key`` header (reserved, and removed from
`Record.headers`). A JetStream stream is one ordered log: every record is in
partition ``"0"`` and its sequence is the stream sequence.

nats-py is asynchronous; this class is the synchronous port, so it runs the
client on an event loop in a background thread of its own. Do not call it
from that loop; from async code, call it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from coalmine._extras import require
from coalmine.core.errors import InvalidInput
from coalmine.core.ports import Record, require_bytes
from coalmine.integrations._checks import check_ack_wait, check_max_records

__all__ = ["DEFAULT_NATS_URL", "KEY_HEADER", "NatsJetStream"]

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
KEY_HEADER = "coalmine-key"
"""the NATS header that carries the record key"""

_NAME = re.compile(r"[A-Za-z0-9_-]{1,200}")
_T = TypeVar("_T")


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidInput(
            f"invalid {what} {value!r} for NATS: use 1-200 letters, digits, '-' or '_'"
        )
    return value


class _LoopThread:
    """An asyncio loop in a daemon thread, and a way to run coroutines on it and wait."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="coalmine-nats", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


class NatsJetStream:
    """A `coalmine.core.ports.Stream` on NATS JetStream.

    ``servers`` is a URL (or a list); ``prefix`` names the subjects and
    streams; ``ack_wait`` is the consumers' ack wait in seconds; ``storage``
    is the streams' storage (``"file"`` or ``"memory"``). Streams and
    consumers are created on first use. Other keyword arguments go to
    ``nats.connect``.
    """

    supports_headers: bool = True

    def __init__(
        self,
        servers: str | Sequence[str] = DEFAULT_NATS_URL,
        *,
        prefix: str = "coalmine",
        ack_wait: float = 30.0,
        storage: str = "file",
        connect_timeout: float = 5.0,
        **connect_options: Any,
    ) -> None:
        self._nats = require("nats", "nats")
        self._api = require("nats.js.api", "nats")
        self._js_errors = require("nats.js.errors", "nats")
        check_ack_wait(ack_wait)
        self.prefix = _check_name(prefix, "prefix")
        self.ack_wait = ack_wait
        self.storage = self._api.StorageType(storage)
        self._streams: set[str] = set()
        self._subs: dict[tuple[str, str], Any] = {}
        self._unacked: dict[tuple[str, str, str], Any] = {}
        self._lock = threading.Lock()
        self._loop = _LoopThread()
        options = {"connect_timeout": connect_timeout, **connect_options}
        if isinstance(servers, str):
            servers = [servers]
        try:
            self._nc = self._loop.run(self._nats.connect(servers=list(servers), **options))
        except BaseException:
            self._loop.stop()
            raise
        self._js = self._nc.jetstream()

    def subject(self, topic: str) -> str:
        return f"{self.prefix}.{_check_name(topic, 'topic')}"

    def stream_name(self, topic: str) -> str:
        return f"{self.prefix}_{_check_name(topic, 'topic')}"

    async def _ensure_stream(self, topic: str) -> str:
        name = self.stream_name(topic)
        if name in self._streams:
            return name
        try:
            await self._js.stream_info(name)
        except self._js_errors.NotFoundError:
            await self._js.add_stream(
                name=name, subjects=[self.subject(topic)], storage=self.storage
            )
        self._streams.add(name)
        return name

    # the port ----------------------------------------------------------------

    def publish(
        self,
        topic: str,
        data: bytes,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        require_bytes(data)
        sent = {k: v for k, v in (headers or {}).items() if k != KEY_HEADER}
        if key is not None:
            sent[KEY_HEADER] = key
        return self._loop.run(self._publish(topic, bytes(data), sent or None))

    async def _publish(self, topic: str, data: bytes, headers: dict[str, str] | None) -> str:
        await self._ensure_stream(topic)
        ack = await self._js.publish(self.subject(topic), data, headers=headers)
        return str(ack.seq)

    def consume(
        self, topic: str, group: str, consumer: str, *, max_records: int, timeout: float
    ) -> list[Record]:
        """Fetch from the group's durable pull consumer (``consumer`` names no NATS object)."""
        check_max_records(max_records)
        _check_name(group, "group")
        msgs = self._loop.run(self._fetch(topic, group, max_records, max(timeout, 0.01)))
        out: list[Record] = []
        with self._lock:
            for msg in msgs:
                headers = dict(msg.headers or {})
                key = headers.pop(KEY_HEADER, None)
                sequence = str(msg.metadata.sequence.stream)
                out.append(Record(topic, "0", sequence, bytes(msg.data), headers, key))
                self._unacked[topic, group, sequence] = msg
        return out

    async def _fetch(self, topic: str, group: str, batch: int, timeout: float) -> list[Any]:
        sub = self._subs.get((topic, group))
        if sub is None:
            name = await self._ensure_stream(topic)
            config = self._api.ConsumerConfig(
                durable_name=group,
                ack_policy=self._api.AckPolicy.EXPLICIT,
                deliver_policy=self._api.DeliverPolicy.ALL,
                ack_wait=self.ack_wait,
            )
            sub = await self._js.pull_subscribe(
                self.subject(topic), durable=group, stream=name, config=config
            )
            self._subs[topic, group] = sub
        try:
            msgs: list[Any] = await sub.fetch(batch=batch, timeout=timeout)
        except TimeoutError:  # nats.errors.TimeoutError is one too
            return []
        return msgs

    def ack(self, topic: str, group: str, records: Sequence[Record]) -> None:
        """Ack records this object consumed (acks travel on the connection that fetched)."""
        with self._lock:
            msgs = [self._unacked.pop((topic, group, r.sequence), None) for r in records]
        found = [m for m in msgs if m is not None]
        if found:
            self._loop.run(self._ack(found))

    async def _ack(self, msgs: list[Any]) -> None:
        for msg in msgs:
            await msg.ack()
        await self._nc.flush()

    # beyond the port -----------------------------------------------------------

    def delete_topic(self, topic: str) -> None:
        """Delete the topic's JetStream stream (and so its consumers), if it exists."""
        self._loop.run(self._delete(topic))

    async def _delete(self, topic: str) -> None:
        name = self.stream_name(topic)
        self._streams.discard(name)
        for k in [k for k in self._subs if k[0] == topic]:
            sub = self._subs.pop(k)
            await sub.unsubscribe()
        with contextlib.suppress(self._js_errors.NotFoundError):
            await self._js.delete_stream(name)

    def close(self) -> None:
        """Flush what was sent (acks too), close the connection, stop the loop; idempotent."""
        if self._loop.loop.is_closed():
            return
        try:
            if not self._nc.is_closed:
                self._loop.run(self._close())
        finally:
            self._loop.stop()

    async def _close(self) -> None:
        try:
            await self._nc.flush(timeout=5)
        finally:
            await self._nc.close()

    def __enter__(self) -> NatsJetStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
