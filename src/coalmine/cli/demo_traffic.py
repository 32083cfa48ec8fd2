"""The demo's traffic: simulated users placing orders, notify-user's consumer, and the ledger.

`Crowd` is a few hundred users placing orders through the gateway at a fixed
pace; `Consumer` is ``notify-user``: it consumes ``order_placed`` and runs
each record on its chain's version (`coalmine.sdk.dispatch`), counting each
call in the SDK client's per-version metrics. Both write what happened to
every order in the `Ledger`, which the scenes (`coalmine.cli.demo_scenes`)
read to count users, chains and failures.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from coalmine.core.model import Channel

__all__ = ["CONSUMER", "TOPIC", "USER_HEADER", "Consumer", "Crowd", "Ledger", "Notified", "Placed"]

TOPIC = "order_placed"
USER_HEADER = "x-user-id"
CONSUMER = "notify-user"


# what happened to each order -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Placed:
    """One answer of ``place-order`` to a simulated user."""

    order: str
    user: str
    done: float
    """time.time() when the answer came"""
    status: int
    version: str
    channel: str
    latency_ms: float


@dataclass(frozen=True, slots=True)
class Notified:
    """What ``notify-user``'s consumer did with one order's event."""

    order: str
    version: str | None
    channel: str
    ok: bool
    error: str | None


@dataclass
class Ledger:
    """Every order's answer and notification, shared by the crowd's and the consumer's threads."""

    placed: list[Placed] = field(default_factory=list)
    """in the order the answers came (so by ``done``)"""
    notified: dict[str, Notified] = field(default_factory=dict)
    transport_errors: int = 0
    _done: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_placed(self, p: Placed) -> None:
        with self._lock:
            # stamped under the lock, so the list stays sorted by time
            p = dataclasses.replace(p, done=time.time())
            self.placed.append(p)
            self._done.append(p.done)

    def add_notified(self, n: Notified) -> None:
        with self._lock:
            # the first delivery decides: a failed notification is the order's failure
            self.notified.setdefault(n.order, n)

    def add_error(self) -> None:
        with self._lock:
            self.transport_errors += 1

    def between(self, start: float, end: float) -> list[Placed]:
        """The answers that came in [start, end)."""
        with self._lock:
            lo = bisect.bisect_left(self._done, start)
            hi = bisect.bisect_left(self._done, end)
            return self.placed[lo:hi]

    def notification(self, order: str) -> Notified | None:
        with self._lock:
            return self.notified.get(order)

    def count(self) -> int:
        with self._lock:
            return len(self.placed)


class Crowd:
    """``users`` simulated users placing ``rate`` orders a second through the gateway, from
    ``threads`` threads.

    The pace is fixed (an open loop, as real users do not wait for each other): a
    machine that falls behind serves fewer orders, rather than queueing them and
    measuring its own queue as everyone's latency.
    """

    def __init__(
        self, url: str, ledger: Ledger, users: int, threads: int, seed: int, rate: float
    ) -> None:
        self.url = url
        self.every = threads / rate
        self.ledger = ledger
        self.users = [f"user-{i:03d}" for i in range(users)]
        self.seed = seed
        self._stop = threading.Event()
        self._ids = itertools.count(1)
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"demo-user-{i}", daemon=True)
            for i in range(threads)
        ]

    def start(self) -> Crowd:
        for t in self._threads:
            t.start()
        return self

    def _run(self, n: int) -> None:
        rng = random.Random(self.seed * 1000 + n)
        menu = ["pizza", "salad", "curry", "noodles", "soup", "tacos"]
        due = time.monotonic() + rng.uniform(0, self.every)
        with httpx.Client(base_url=self.url, timeout=10) as http:
            while not self._stop.wait(max(0.0, due - time.monotonic())):
                due = max(due + self.every, time.monotonic())
                user = rng.choice(self.users)
                order = f"o-{next(self._ids)}"
                body = {"id": order, "items": rng.sample(menu, rng.randint(1, 3))}
                t0 = time.perf_counter()
                try:
                    r = http.post("/place-order/", json=body, headers={USER_HEADER: user})
                except httpx.HTTPError:
                    self.ledger.add_error()
                    continue
                self.ledger.add_placed(
                    Placed(
                        order,
                        user,
                        time.time(),
                        r.status_code,
                        r.headers.get("x-coalmine-version", "?"),
                        r.headers.get("x-coalmine-channel", "?"),
                        (time.perf_counter() - t0) * 1000.0,
                    )
                )

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)


# the consumer ------------------------------------------------------------------------


class Consumer:
    """``notify-user``: consumes ``order_placed`` and runs each record on its chain's version.

    A failed record is counted as its order's failure and acked (dead-lettered),
    as a consumer with an on-failure destination does; records skipped behind
    it come back after the stream's ack wait.
    """

    def __init__(
        self,
        stream: Any,
        client: Any,
        handlers: Mapping[str, Callable[[Any], Any]],
        ledger: Ledger,
        app: str,
    ) -> None:
        self.stream, self.client, self.ledger, self.app = stream, client, ledger, app
        self.handlers = {v: self._timed(v, h) for v, h in handlers.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-notify-user", daemon=True)

    def _timed(self, version: str, handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
        from coalmine.sdk.scope import current_decision

        def run(payload: Any) -> Any:
            t0 = time.perf_counter()
            ok = False
            try:
                result = handler(payload)
                ok = True
                return result
            finally:
                decision = current_decision()
                channel = decision.channel if decision is not None else Channel.STABLE
                ms = (time.perf_counter() - t0) * 1000.0
                self.client.record(self.app, CONSUMER, version, channel, ms, error=not ok)

        return run

    def start(self) -> Consumer:
        self._thread.start()
        return self

    def _run(self) -> None:
        from coalmine.sdk.dispatch import RecordStatus, consume_and_dispatch
        from coalmine.sdk.records import read_record

        while not self._stop.is_set():
            try:
                result = consume_and_dispatch(
                    self.stream,
                    TOPIC,
                    CONSUMER,
                    "demo",
                    self.handlers,
                    app=self.app,
                    function=CONSUMER,
                    router=self.client,
                    max_records=50,
                    timeout=0.2,
                    # an event in flight when its release settles keeps its chain's
                    # version: notify-user v2 cannot read the v1 event of a stable chain
                    drain_stable_after_promotion=True,
                    drain_canary_after_rollback=True,
                )
            except Exception:  # a stream closing under us at shutdown
                if self._stop.is_set():
                    return
                self._stop.wait(0.1)
                continue
            failed = []
            for o in result.outcomes:
                if o.status is RecordStatus.SKIPPED:
                    continue
                try:
                    order = str(read_record(o.record)[2]["order_id"])
                except Exception:
                    order = f"unreadable-{o.record.sequence}"
                self.ledger.add_notified(Notified(order, o.version, str(o.channel), o.ok, o.error))
                if not o.ok:
                    failed.append(o.record)
            if failed:
                self.stream.ack(TOPIC, CONSUMER, failed)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
