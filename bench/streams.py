"""What carrying the routing context costs a stream hop, per record, on real brokers.

For each broker (the in-memory stream, NATS JetStream and Redis Streams on
127.0.0.1) the same N orders go through one hop, ``place-order`` publishing
``order_placed`` and ``notify-user`` consuming it, two ways:

* **with context**: the producer decides for the user, signs the decision
  (`StaticRouter.encode`) and publishes inside ``use(decision, token)`` with
  `coalmine.sdk.publish` (the ``baggage`` header); the consumer
  `consume_and_dispatch`-es batches of 100, verifying each record's context
  and running the version it pins;
* **without**: the producer decides the same way and publishes with
  `coalmine.sdk.publish` but no context (only the user key header); the
  consumer dispatches by user key alone (the decide fast path).

Everything else is equal: the same payloads (the examples' place-order
events), handlers (the examples' notify-user, without the time they spend
to look like work), router and batch size. Each
run uses a fresh topic, timed from the first publish to the last ack; runs
of the two ways alternate, and the median of the rounds is reported in
microseconds per record. ``overhead_us_per_record`` is the median of the
rounds' paired differences (with minus without, run back to back);
``ratio`` is the median with over the median without. Every run must handle every record with no
failure and each record on its producer's version, or the script exits 1.

Run it from the repository root::

    .venv/bin/python bench/streams.py            # 1,000 records x 9 rounds, < 60 s
    .venv/bin/python bench/streams.py --quick    # a smoke test, a few seconds
    .venv/bin/python bench/streams.py --brokers memory,redis --records 5000

It prints a table and, last, one JSON line::

    {"bench": "streams", "nats": {"overhead_us_per_record": .., "ratio": ..},
     "redis": {...}, "memory": {...}, ...}

A broker that does not answer is reported as null (and named on stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import json
import platform
import socket
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from coalmine.core import Keyring, Phase, Release, RouteMode, RoutingState, parse_strategy
from coalmine.core.ports import Stream
from coalmine.integrations import MemoryStream, NatsJetStream, RedisStream
from coalmine.sdk.dispatch import consume_and_dispatch
from coalmine.sdk.publish import publish
from coalmine.sdk.router import StaticRouter
from coalmine.sdk.scope import use

ROOT = Path(__file__).resolve().parent.parent
APP = "food-ordering"
EXPOSURE = 3000
BATCH = 100
BROKERS = ("nats", "redis", "memory")
PORTS = {"nats": 4222, "redis": 6379}
DEFAULT_RECORDS, DEFAULT_ROUNDS = 1000, 9
QUICK_RECORDS, QUICK_ROUNDS = 200, 1
BUDGET_SECONDS = 45.0
"""shared equally by the brokers; no new round starts past a broker's share, so
the whole run stays under a minute"""


def example_modules(function: str) -> dict[str, Any]:
    """examples/food_ordering's module of each version of ``function`` (v1, v2)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return {
        v: importlib.import_module(f"examples.food_ordering.{function}_{v}") for v in ("v1", "v2")
    }


def _no_work(median_ms: float, sigma: float = 0.3) -> None:
    """The examples' ``work`` (a sleep that looks like the function's own work), skipped: it
    would be most of a record's time and hide the hop's."""


PLACE_ORDER = {v: m.order_placed for v, m in example_modules("place_order").items()}
"""each version's ``order_placed`` event builder: (order, user) -> event"""
_NOTIFY_MODULES = example_modules("notify_user")
for _module in _NOTIFY_MODULES.values():
    _module.work = _no_work
NOTIFY_USER = {v: m.handler for v, m in _NOTIFY_MODULES.items()}


def make_router() -> StaticRouter:
    current = {"notify-user": "v1", "place-order": "v1"}
    release = Release.start(
        id="r-bench",
        app=APP,
        current=current,
        changes={"notify-user": "v2", "place-order": "v2"},
        salt="bench-streams-salt",
        strategy=parse_strategy("Canary10Percent5Minutes"),
        route_mode=RouteMode.USER,
    )
    release = dataclasses.replace(release, phase=Phase.RUNNING, exposure=EXPOSURE)
    keyring = Keyring.single(b"bench-streams-secret-0123456789ab")
    return StaticRouter(RoutingState(APP, current, release), keyring)


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def open_broker(name: str) -> Any:
    if name == "memory":
        return MemoryStream()
    if name == "nats":
        return NatsJetStream(storage="memory", prefix="coalminebench")
    if name == "redis":
        return RedisStream()
    raise ValueError(f"unknown broker {name!r}: use {', '.join(BROKERS)}")


@dataclasses.dataclass(frozen=True)
class Orders:
    """The workload: one order per user, each with the place-order event of its version."""

    users: list[str]
    events: list[dict[str, Any]]
    versions: list[str]


def make_orders(router: StaticRouter, n: int) -> Orders:
    users = [f"user-{i}" for i in range(n)]
    versions = [router.decide(APP, u, None).versions["place-order"] for u in users]
    events = [
        PLACE_ORDER[v]({"id": f"o-{i}"}, u)
        for i, (u, v) in enumerate(zip(users, versions, strict=True))
    ]
    return Orders(users, events, versions)


def one_run(stream: Stream, router: StaticRouter, orders: Orders, *, context: bool) -> float:
    """Seconds for the whole hop of every order; raises AssertionError on any wrong outcome."""
    topic = f"bench-{uuid.uuid4().hex[:10]}"
    n = len(orders.users)
    handled: dict[str, str] = {}

    def handler(version: str) -> Callable[[Any], Any]:
        def handle(event: dict[str, Any]) -> Any:
            handled[event["order_id"]] = version
            return NOTIFY_USER[version](event)

        return handle

    handlers = {v: handler(v) for v in NOTIFY_USER}
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for user, event in zip(orders.users, orders.events, strict=True):
            decision = router.decide(APP, user, None)
            if context:
                with use(decision, router.encode(decision)):
                    publish(stream, topic, event, key=user)
            else:
                publish(stream, topic, event, key=user)
        failures = 0
        while len(handled) + failures < n:
            result = consume_and_dispatch(
                stream,
                topic,
                "notify-user",
                "bench",
                handlers,
                app=APP,
                function="notify-user",
                router=router,
                max_records=BATCH,
                timeout=2.0,
            )
            if not result.outcomes:
                raise AssertionError(f"the consumer stalled at {len(handled)} of {n} records")
            failures += len(result.failures)
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
        delete = getattr(stream, "delete_topic", None)
        if callable(delete):
            delete(topic)
    if failures:
        raise AssertionError(f"{failures} records failed")
    wrong = sum(1 for i, v in enumerate(orders.versions) if handled[f"o-{i}"] != v)
    if wrong:
        raise AssertionError(f"{wrong} records ran another version than their producer's")
    return elapsed


def bench_broker(name: str, n: int, rounds: int, deadline: float) -> dict[str, float]:
    router = make_router()
    orders = make_orders(router, n)
    stream = open_broker(name)
    with_ctx: list[float] = []
    without: list[float] = []
    try:
        one_run(stream, router, make_orders(router, min(n, 50)), context=True)  # warm up
        for i in range(rounds):
            if i and time.monotonic() > deadline:
                break
            for ctx in (True, False) if i % 2 == 0 else (False, True):
                (with_ctx if ctx else without).append(one_run(stream, router, orders, context=ctx))
    finally:
        stream.close()
    w = statistics.median(with_ctx) / n * 1e6
    wo = statistics.median(without) / n * 1e6
    # each round runs both ways back to back: the median of the paired
    # differences resists the drift of a busy machine better than w - wo
    overhead = statistics.median(a - b for a, b in zip(with_ctx, without, strict=True)) / n * 1e6
    return {
        "with_context_us_per_record": round(w, 2),
        "without_us_per_record": round(wo, 2),
        "overhead_us_per_record": round(overhead, 2),
        "ratio": round(w / wo, 3),
        "records": n,
        "rounds": len(with_ctx),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Per-record cost of the routing context on a stream hop (publish + dispatch)."
    )
    parser.add_argument("--records", type=int, default=None, help="records per run")
    parser.add_argument("--rounds", type=int, default=None, help="runs of each way per broker")
    parser.add_argument(
        "--brokers", default=",".join(BROKERS), help="comma-separated: nats,redis,memory"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    args.records = args.records or (QUICK_RECORDS if args.quick else DEFAULT_RECORDS)
    args.rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    if args.records < 10 or args.rounds < 1:
        parser.error("--records must be at least 10 and --rounds at least 1")
    args.brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    unknown = sorted(set(args.brokers) - set(BROKERS))
    if unknown:
        parser.error(f"unknown broker(s) {', '.join(unknown)}: use {', '.join(BROKERS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, dict[str, float] | None] = {}
    # the fast one first; each broker gets an equal share of the time budget
    chosen = [b for b in ("memory", "redis", "nats") if b in args.brokers]
    for name in chosen:
        port = PORTS.get(name)
        if port is not None and not reachable(port):
            print(f"{name}: nothing answers on 127.0.0.1:{port}; skipped", file=sys.stderr)
            results[name] = None
            continue
        deadline = time.monotonic() + BUDGET_SECONDS / len(chosen)
        try:
            results[name] = bench_broker(name, args.records, args.rounds, deadline)
        except AssertionError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 1
    if not args.json_only:
        print(
            f"stream hop: place-order -> notify-user, {args.records} records per run,"
            f" batches of {BATCH}, {EXPOSURE / 100:.0f}% canary; median of the rounds"
        )
        print(f"python {platform.python_version()} on {platform.machine()}")
        header = f"{'broker':<8} {'rounds':>6} {'with ctx':>10} {'without':>10} {'overhead':>10} {'ratio':>7}"
        print(header)
        print(f"{'':<8} {'':>6} {'us/rec':>10} {'us/rec':>10} {'us/rec':>10} {'':>7}")
        for name in BROKERS:
            if name not in results:
                continue
            r = results[name]
            if r is None:
                print(f"{name:<8} {'-':>6} {'unreachable':>10}")
                continue
            print(
                f"{name:<8} {r['rounds']:>6.0f} {r['with_context_us_per_record']:>10.1f}"
                f" {r['without_us_per_record']:>10.1f} {r['overhead_us_per_record']:>10.1f}"
                f" {r['ratio']:>7.3f}"
            )
    out: dict[str, Any] = {"bench": "streams"}
    for name in BROKERS:
        if name in results:
            out[name] = results[name]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
