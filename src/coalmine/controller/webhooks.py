"""Event webhooks: tell outside URLs of each release event, in the background.

`EventWebhooks` is an event sink of `ControlService` (called after commit
with the event and the app's webhook URLs). It only enqueues, so a slow or
dead endpoint never blocks a transaction or the rollout loop; one background
thread POSTs each release event's JSON to each URL, in order, retrying with
backoff, and logs what it could not deliver. Each POST has ``timeout``
seconds in all (reading the answer included) and reads at most
`ANSWER_LIMIT` bytes of the answer; connections go only where the outbound
policy allows (`coalmine.integrations.outbound`). Delivery is at-least-once per
running process: events still queued when the process dies are lost (the
audit log in the store keeps them).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from coalmine.controller.schemas import EventRead
from coalmine.core.records import EventRecord
from coalmine.integrations.outbound import deadline as outbound_deadline
from coalmine.integrations.outbound import guarded_transport, read_capped

__all__ = ["ANSWER_LIMIT", "EventWebhooks"]

ANSWER_LIMIT = 4096
"""bytes of a webhook's answer read at most (only its status counts)"""

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Delivery:
    event: EventRead
    url: str


_STOP = object()


class EventWebhooks:
    """An `EventSink` that POSTs release events to webhook URLs from a background thread."""

    def __init__(
        self,
        *,
        retries: int = 3,
        backoff: float = 0.5,
        timeout: float = 5.0,
        max_queue: int = 10_000,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self._queue: queue.Queue[_Delivery | object] = queue.Queue(maxsize=max_queue)
        self._client = client
        self._owns_client = client is None
        self._stopping = threading.Event()
        self._sleep = sleep or self._stopping.wait
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.failed = 0

    def __call__(self, event: EventRecord, urls: list[str]) -> None:
        """Enqueue ``event`` for each URL and return at once; never raises."""
        if event.release_id is None:
            return
        for url in urls:
            try:
                self._queue.put_nowait(_Delivery(EventRead.of(event), url))
            except queue.Full:
                self.failed += 1
                log.warning(
                    "event webhooks: queue full; dropped %s event %d for %s",
                    event.kind,
                    event.id,
                    url,
                )

    def start(self) -> None:
        if self._thread is not None:
            return
        if self._client is None:
            self._client = httpx.Client(
                headers={"user-agent": "coalmine-controller"}, transport=guarded_transport()
            )
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="coalmine-webhooks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued for up to ``timeout`` seconds, then stop."""
        thread = self._thread
        if thread is not None:
            deadline = time.monotonic() + timeout
            self._queue.put(_STOP)
            thread.join(timeout)
            if thread.is_alive():
                self._stopping.set()  # cut retry pauses short
                thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
            self._thread = None
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, _Delivery)
            try:
                self._deliver(item)
            except Exception:  # the thread must survive anything
                self.failed += 1
                log.exception("event webhooks: delivering to %s failed", item.url)

    def _deliver(self, item: _Delivery) -> None:
        assert self._client is not None
        ev = item.event
        attempts = self.retries + 1
        problem = ""
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                self._sleep(min(self.backoff * 2 ** (attempt - 2), 30.0))
            if self._stopping.is_set() and attempt > 1:
                break
            try:
                with (
                    outbound_deadline(self.timeout) as deadline,
                    self._client.stream(
                        "POST",
                        item.url,
                        json=ev.model_dump(mode="json"),
                        headers={"coalmine-event-id": str(ev.id), "coalmine-event-kind": ev.kind},
                        timeout=self.timeout,
                    ) as response,
                ):
                    whole = read_capped(response, ANSWER_LIMIT, deadline) is not None
                    status = response.status_code
            except httpx.TimeoutException:
                problem = f"timed out ({self.timeout:g}s)"
                continue
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if not whole:
                problem = f"timed out ({self.timeout:g}s)"
                continue
            if 200 <= status < 300:
                self.delivered += 1
                return
            problem = f"answered {status}"
        self.failed += 1
        log.warning(
            "event webhooks: %s event %d of release %s not delivered to %s (%s, %d attempts)",
            ev.kind,
            ev.id,
            ev.release_id,
            item.url,
            problem or "stopped",
            attempts,
        )
