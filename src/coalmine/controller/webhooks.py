"""Event webhooks: send the webhook outbox, in the background, surviving restarts.

Every release event is written to the outbox (`coalmine.store.outbox`) with
one delivery for each of the app's webhooks that wants it, in the event's own
transaction. `EventWebhooks` sends them: it is an event sink of
`ControlPlane` only to be woken after a commit (it also looks every
``poll`` seconds, for what other processes wrote), and one background thread
claims the oldest pending delivery of each URL, POSTs its message in the
webhook's format (`coalmine.controller.webhook_messages`) and settles it:

* a 2xx answer marks it delivered, and it is never sent again;
* anything else (another status, a timeout, a connection error, a
  destination the outbound policy refuses) is tried again after a backoff
  (``backoff`` seconds, doubling, at most ``max_backoff``), until
  ``retries`` more attempts or ``max_age`` seconds since the event have
  passed: then it is given up, recorded as such, and logged at WARNING.

Delivery is at-least-once: a process that dies between a receiver's 2xx and
the mark (or is cut off from the store there) leaves the delivery pending,
and it is sent again; receivers drop duplicates by the ``coalmine-event-id``
header. A claim is a lease (``timeout`` plus a margin), so replicas sharing a
store never send one delivery at the same time, and a dead sender's claims
lapse. Each POST has ``timeout`` seconds in all (reading the answer
included) and reads at most `ANSWER_LIMIT` bytes of the answer; connections
go only where the outbound policy allows (`coalmine.integrations.outbound`).
Logs name a webhook by its URL without its query and its last path segment
(Slack's and Teams' URLs carry their secret there).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from coalmine.controller.webhook_messages import message
from coalmine.core.records import EventRecord
from coalmine.integrations.outbound import deadline as outbound_deadline
from coalmine.integrations.outbound import guarded_transport, read_capped
from coalmine.store.db import Store
from coalmine.store.outbox import Delivery, OutboxRepository

__all__ = ["ANSWER_LIMIT", "EventWebhooks", "shown_url"]

ANSWER_LIMIT = 4096
"""bytes of a webhook's answer read at most (only its status counts)"""
_LEASE_MARGIN = 10.0
"""seconds a claim outlasts an attempt's timeout (settling it takes a transaction)"""
_PRUNE_EVERY = 3600.0

log = logging.getLogger(__name__)


def shown_url(url: str) -> str:
    """``url`` as logs show it: no credentials, no query, the last path segment elided."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<a malformed URL>"
    if ":" in host:
        host = f"[{host}]"
    path = parts.path
    if path.strip("/"):
        path = path.rstrip("/").rsplit("/", 1)[0] + "/…"
    return f"{parts.scheme}://{host}{port}{path}"


class EventWebhooks:
    """Sends the webhook outbox of ``store`` from a background thread (see the module)."""

    def __init__(
        self,
        store: Store,
        *,
        retries: int = 11,
        backoff: float = 1.0,
        max_backoff: float = 300.0,
        max_age: float = 86_400.0,
        timeout: float = 5.0,
        poll: float = 1.0,
        keep: float = 7 * 86_400.0,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.retries = retries
        """attempts after the first before a delivery is given up"""
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_age = max_age
        """seconds after its event a delivery is given up (even if never tried)"""
        self.timeout = timeout
        self.poll = poll
        """seconds between looks at the outbox when no commit of this process woke it"""
        self.keep = keep
        """seconds settled deliveries are kept (for a look at what was given up)"""
        self.clock = clock
        self._client = client
        self._owns_client = client is None
        self._me = secrets.token_hex(8)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._drain_until = 0.0
        self._thread: threading.Thread | None = None
        self._unrecorded: dict[int, float] = {}
        """deliveries sent whose mark could not be written yet (the store was down)"""
        self._pruned_at = 0.0
        self._trouble = ""
        """the last error reading the outbox ("" while it reads)"""
        self.delivered = 0
        """deliveries this process sent (answered 2xx)"""
        self.failed = 0
        """deliveries this process gave up"""

    def __call__(self, event: EventRecord, urls: list[str]) -> None:
        """A commit wrote ``event``: look at the outbox now. Returns at once; never raises."""
        if event.release_id is not None and urls:
            self._wake.set()

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
        """Send what is due for up to ``timeout`` seconds, then stop; the rest stays in the
        outbox for the next start."""
        thread = self._thread
        if thread is not None:
            self._drain_until = time.monotonic() + timeout
            self._stopping.set()
            self._wake.set()
            thread.join(timeout + self.timeout + 1.0)
            if thread.is_alive():
                log.warning("event webhooks: the sender did not stop within %gs", timeout)
            self._thread = None
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None

    @property
    def pending(self) -> int:
        """Deliveries in the outbox not yet delivered nor given up (any process's)."""
        with self.store.transaction() as session:
            return OutboxRepository(session).count()

    # -- the sender thread ----------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.clear()  # before the look: a commit during it wakes the next wait
            try:
                sent, wait = self.send_due()
            except Exception as exc:  # the store is down: look again later
                problem = f"{type(exc).__name__}: {exc}"
                # once per kind of trouble, not once per look
                level = logging.DEBUG if problem == self._trouble else logging.WARNING
                log.log(level, "event webhooks: cannot read the outbox: %s", problem)
                self._trouble = problem
                sent, wait = 0, self.poll
            else:
                if self._trouble:
                    log.info("event webhooks: the outbox can be read again")
                self._trouble = ""
            if self._stopping.is_set():
                if sent == 0 or time.monotonic() >= self._drain_until:
                    return
                continue
            if sent == 0:
                self._wake.wait(wait)

    def send_due(self, limit: int = 100) -> tuple[int, float]:
        """Try each delivery due now, once; (how many were tried, seconds until the next
        look). Runs on the sender thread (tests call it directly)."""
        self._record_unrecorded()
        now = self.clock()
        with self.store.transaction() as session:
            due = OutboxRepository(session).due(now, limit)
        tried = 0
        for delivery_id in due:
            if self._stopping.is_set() and time.monotonic() >= self._drain_until:
                break
            with self.store.transaction() as session:
                claimed = OutboxRepository(session).claim(
                    delivery_id, self.clock(), self.timeout + _LEASE_MARGIN, self._me
                )
            if claimed is not None:
                tried += 1
                self._attempt(claimed)
        now = self.clock()
        with self.store.transaction() as session:
            outbox = OutboxRepository(session)
            if now - self._pruned_at >= _PRUNE_EVERY:
                self._pruned_at = now
                pruned = outbox.prune(now - self.keep)
                if pruned:
                    log.info("event webhooks: %d settled deliveries pruned", pruned)
            next_due = outbox.next_due()
        wait = self.poll if next_due is None else min(self.poll, max(0.0, next_due - now))
        return tried, wait

    def _attempt(self, d: Delivery) -> None:
        started = self.clock()
        ev = d.event
        problem = (
            f"not sent: older than {self.max_age:g}s"
            if started - d.created_at > self.max_age
            else self._post(d)
        )
        now = self.clock()
        if problem is None:
            self.delivered += 1
            self._unrecorded[d.id] = now
            self._record_unrecorded()
            return
        what = f"{ev.kind} event {ev.id} of release {ev.release_id}"
        if d.attempts > self.retries or now - d.created_at >= self.max_age:
            self.failed += 1
            self._settle(d, now, problem, None)
            log.warning(
                "event webhooks: %s not delivered to %s (%s; gave up after %d attempts;"
                " delivery %d)",
                what,
                shown_url(d.url),
                problem,
                d.attempts,
                d.id,
            )
            return
        pause = min(self.backoff * 2 ** (d.attempts - 1), self.max_backoff)
        self._settle(d, now, problem, now + pause)
        log.info(
            "event webhooks: %s to %s: %s (attempt %d of %d; next in %gs)",
            what,
            shown_url(d.url),
            problem,
            d.attempts,
            self.retries + 1,
            pause,
        )

    def _post(self, d: Delivery) -> str | None:
        """POST the delivery's message once; None when answered 2xx, else what went wrong."""
        assert self._client is not None
        try:
            body: dict[str, Any] = message(d.format, d.event)
        except ValueError:
            return f"unknown format {d.format!r}"
        try:
            with (
                outbound_deadline(self.timeout) as deadline,
                self._client.stream(
                    "POST",
                    d.url,
                    json=body,
                    headers={
                        "coalmine-event-id": str(d.event.id),
                        "coalmine-event-kind": d.event.kind,
                    },
                    timeout=self.timeout,
                ) as response,
            ):
                whole = read_capped(response, ANSWER_LIMIT, deadline) is not None
                status = response.status_code
        except httpx.TimeoutException:
            return f"timed out ({self.timeout:g}s)"
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if not whole:
            return f"timed out ({self.timeout:g}s)"
        if 200 <= status < 300:
            return None
        return f"answered {status}"

    def _settle(self, d: Delivery, now: float, problem: str, retry_at: float | None) -> None:
        try:
            with self.store.transaction() as session:
                OutboxRepository(session).failed(d.id, self._me, now, problem, retry_at)
        except Exception as exc:  # its lease lapses and it is tried again: nothing is lost
            log.warning("event webhooks: cannot record delivery %d's attempt: %s", d.id, exc)

    def _record_unrecorded(self) -> None:
        """Mark the sent deliveries whose marks are still to be written."""
        if not self._unrecorded:
            return
        try:
            with self.store.transaction() as session:
                outbox = OutboxRepository(session)
                for delivery_id, at in self._unrecorded.items():
                    outbox.delivered(delivery_id, at)
        except Exception as exc:
            log.warning(
                "event webhooks: cannot mark %d deliveries sent (tried again): %s",
                len(self._unrecorded),
                exc,
            )
            raise
        self._unrecorded.clear()
