"""Per-decision cost of `coalmine.core.decide` (user mode) next to a floor and two SDKs.

Four contenders each decide the same N distinct user keys (``user-0`` ...),
R rounds, all in one process and one run:

* ``coalmine decide``: ``decide(state, key)`` for a RUNNING user-mode release at
  10% exposure (1000 basis points) over two functions;
* ``mmh3 floor``: the least a sticky 10% split can cost from Python, a function
  with decide's call shape doing ``mmh3.hash(salt + ":" + key, 0, False) % 10000
  < 1000``;
* ``LaunchDarkly variation``: the LaunchDarkly Python server SDK evaluating a raw
  flag whose fallthrough is a 10% percentage rollout, fed through its file data
  source (its TestData cannot express a rollout);
* ``Unleash is_enabled``: the Unleash Python client evaluating a
  ``flexibleRollout`` strategy at 10% (stickiness ``userId``), bootstrapped from
  a dict and started with ``fetch_toggles=False``.

Everything is offline: events, diagnostics, metrics, registration and polling
are off, every SDK URL points at a local discard port, and an audit hook
refuses any socket connect or name lookup (the run fails if one is tried).

Method: every contender runs in the same loop, ``for item in items: fn(first,
item)``, timed with ``time.perf_counter_ns`` around the whole batch with the
garbage collector paused; rounds are interleaved (the order rotates each round)
and the median of the rounds is reported in ns per decision. SDK contexts (an
LDContext, an Unleash context dict) are built once per user before timing,
which only flatters the SDKs; LaunchDarkly's three-argument ``variation`` sits
behind a one-line adapter (one extra Python call; docs/benchmarks.md says what
it costs). An empty call in the same loop is shown for scale. Before timing, one untimed
pass per contender records its canary share over the keys: each must be within
8%-12% (and coalmine's cohort must equal the floor's, key for key), else the
script exits 1.

Run it from the repository root::

    .venv/bin/python bench/decision.py               # 20,000 users x 11 rounds, ~30 s
    .venv/bin/python bench/decision.py --quick       # a smoke test, a few seconds
    .venv/bin/python bench/decision.py --users 50000 --rounds 21 --json-only

It prints a table, the goals (decide within 3x of the floor; LaunchDarkly at
least 30x slower than decide) with PASS or MISS, and last one JSON line::

    {"bench": "decision", "coalmine_ns": .., "floor_ns": .., "launchdarkly_ns": ..,
     "unleash_ns": .., ...}

A MISS is reported, not turned into a failing exit status: timings are noisy.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import mmh3
from ldclient import Context, LDClient
from ldclient.config import Config
from ldclient.integrations import Files
from UnleashClient import UnleashClient  # type: ignore[attr-defined]  # re-exported, not in __all__
from UnleashClient.cache import FileCache
from UnleashClient.utils import InstanceAllowType

from _table import print_aligned
from coalmine.core import (
    BUCKETS,
    Channel,
    Decision,
    Phase,
    Release,
    RouteMode,
    RoutingState,
    decide,
    parse_strategy,
)

FLAG = "coalmine-bench"
SALT = "bench-salt-0001"
EXPOSURE = 1000
"""basis points of 10000: a 10% rollout"""
LD_TOTAL_WEIGHT = 100_000
"""LaunchDarkly rollout weights are out of 100000"""
NOWHERE = "http://127.0.0.1:9"
"""the discard port: where any SDK URL points, never contacted"""
SHARE_RANGE = (0.08, 0.12)
GOAL_VS_FLOOR = 3.0
GOAL_LD_VS_COALMINE = 30.0
DEFAULT_USERS, DEFAULT_ROUNDS = 20_000, 11
QUICK_USERS, QUICK_ROUNDS = 2_000, 3
MIN_USERS = 1_000
SDK_LOGGERS = ("ldclient", "UnleashClient", "apscheduler", "tzlocal", "yggdrasil_engine")

# --- offline guard ----------------------------------------------------------

_NETWORK_EVENTS = frozenset(
    {
        "socket.connect",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.gethostbyaddr",
        "socket.sendto",
        "socket.sendmsg",
    }
)
_network_attempts: list[str] = []


def _refuse_network(event: str, args: tuple[Any, ...]) -> None:
    """An audit hook: the benchmark must not touch the network, so refuse and remember."""
    if event in _NETWORK_EVENTS:
        _network_attempts.append(f"{event}{args!r}")
        raise OSError(f"bench/decision.py runs offline; refused {event}")


# --- contenders -------------------------------------------------------------

Call = Callable[[Any, Any], object]


@dataclass(frozen=True)
class Contender:
    """One way of deciding: ``fn(first, item)`` per user, ``is_canary`` reads its result."""

    name: str
    fn: Call
    first: Any
    items: Sequence[Any]
    is_canary: Callable[[object], bool] | None
    """None for the empty-call row, which decides nothing"""


def floor_split(prefix: str, user_key: str) -> bool:
    """The floor: a bare salted mmh3 split, with decide's call shape."""
    return mmh3.hash(prefix + user_key, 0, False) % 10000 < 1000


def empty_call(first: object, item: object) -> object:
    """Nothing but the loop and a Python call, for scale."""
    return first


def _decision_is_canary(result: object) -> bool:
    assert isinstance(result, Decision)
    return result.channel is Channel.CANARY


def _is_true(result: object) -> bool:
    return result is True


def coalmine_state() -> RoutingState:
    """A RUNNING user-mode release at 10% of an app with two functions."""
    current = {"checkout": "v1", "payment": "v1"}
    release = Release.start(
        id="r-bench",
        app="shop",
        current=current,
        changes={"checkout": "v2"},
        salt=SALT,
        strategy=parse_strategy("Canary10Percent5Minutes"),
        route_mode=RouteMode.USER,
    )
    release = dataclasses.replace(release, phase=Phase.RUNNING, exposure=EXPOSURE)
    return RoutingState(app="shop", versions=current, release=release)


def launchdarkly_flag() -> dict[str, Any]:
    """A raw LaunchDarkly flag, on, whose fallthrough serves true to 10% by context key."""
    canary = EXPOSURE * LD_TOTAL_WEIGHT // BUCKETS
    return {
        "key": FLAG,
        "version": 1,
        "on": True,
        "variations": [True, False],
        "offVariation": 1,
        "fallthrough": {
            "rollout": {
                "variations": [
                    {"variation": 0, "weight": canary},
                    {"variation": 1, "weight": LD_TOTAL_WEIGHT - canary},
                ],
                "bucketBy": "key",
            }
        },
        "targets": [],
        "contextTargets": [],
        "rules": [],
        "prerequisites": [],
        "salt": SALT,
        "trackEvents": False,
        "trackEventsFallthrough": False,
        "clientSideAvailability": {"usingMobileKey": False, "usingEnvironmentId": False},
    }


def unleash_features() -> dict[str, Any]:
    """An Unleash /api/client/features payload: one toggle, a flexibleRollout at 10%."""
    return {
        "version": 1,
        "features": [
            {
                "name": FLAG,
                "type": "release",
                "project": "default",
                "enabled": True,
                "impressionData": False,
                "strategies": [
                    {
                        "name": "flexibleRollout",
                        "parameters": {
                            "rollout": str(EXPOSURE * 100 // BUCKETS),
                            "stickiness": "userId",
                            "groupId": FLAG,
                        },
                        "constraints": [],
                    }
                ],
                "variants": [],
            }
        ],
    }


def _ld_variation(client: Any, context: Context) -> object:
    """Adapter to the two-argument loop: LaunchDarkly's ``variation`` takes three."""
    return client.variation(FLAG, context, False)


@contextmanager
def launchdarkly(tmp: str, keys: Sequence[str]) -> Iterator[Contender]:
    """An LDClient on the file data source, events and diagnostics off."""
    path = os.path.join(tmp, "launchdarkly-flags.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"flags": {FLAG: launchdarkly_flag()}}, f)
    config = Config(
        sdk_key="bench",
        update_processor_class=Files.new_data_source(paths=[path]),
        send_events=False,
        diagnostic_opt_out=True,
        base_uri=NOWHERE,
        stream_uri=NOWHERE,
        events_uri=NOWHERE,
    )
    client: Any = LDClient(config, start_wait=2.0)  # partly untyped (close): Any at the boundary
    try:
        if not client.is_initialized():
            raise SystemExit("LaunchDarkly: the file data source did not initialize within 2 s")
        contexts = [Context.create(key) for key in keys]
        detail = client.variation_detail(FLAG, contexts[0], None)
        if detail.reason.get("kind") != "FALLTHROUGH" or detail.value is None:
            raise SystemExit(f"LaunchDarkly: flag not evaluated from the file: {detail!r}")
        yield Contender("LaunchDarkly variation", _ld_variation, client, contexts, _is_true)
    finally:
        client.close()


@contextmanager
def unleash(tmp: str, keys: Sequence[str]) -> Iterator[Contender]:
    """An UnleashClient bootstrapped from a dict, no metrics, registration or fetching."""
    cache = FileCache(FLAG, directory=tmp)
    cache.bootstrap_from_dict(unleash_features())
    client = UnleashClient(
        url=NOWHERE,
        app_name=FLAG,
        refresh_interval=3600,
        disable_metrics=True,
        disable_registration=True,
        cache=cache,
        multiple_instance_mode=InstanceAllowType.SILENTLY_ALLOW,
    )
    try:
        client.initialize_client(fetch_toggles=False)
        if not client.is_initialized or FLAG not in client.feature_definitions():
            raise SystemExit("Unleash: the bootstrapped toggle did not load")
        contexts = [{"userId": key} for key in keys]
        yield Contender("Unleash is_enabled", client.is_enabled, FLAG, contexts, _is_true)
    finally:
        client.destroy()


# --- measuring --------------------------------------------------------------


def time_batch(fn: Call, first: Any, items: Sequence[Any]) -> int:
    """Nanoseconds for one pass over ``items``; the same loop for every contender."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for item in items:
            fn(first, item)
        return time.perf_counter_ns() - start
    finally:
        if gc_was_enabled:
            gc.enable()


def canary_keys(contender: Contender, keys: Sequence[str]) -> set[str]:
    """One untimed pass (also the warm-up): the keys this contender put in the canary."""
    is_canary = contender.is_canary
    fn, first = contender.fn, contender.first
    if is_canary is None:
        for item in contender.items:
            fn(first, item)
        return set()
    return {
        key for key, item in zip(keys, contender.items, strict=True) if is_canary(fn(first, item))
    }


def measure(contenders: Sequence[Contender], rounds: int) -> dict[str, float]:
    """Median ns per decision over ``rounds`` interleaved rounds."""
    per_round: dict[str, list[float]] = {c.name: [] for c in contenders}
    for r in range(rounds):
        shift = r % len(contenders)
        for c in [*contenders[shift:], *contenders[:shift]]:
            gc.collect()
            ns = time_batch(c.fn, c.first, c.items)
            per_round[c.name].append(ns / len(c.items))
    return {name: statistics.median(values) for name, values in per_round.items()}


# --- reporting --------------------------------------------------------------


def _fmt_ratio(value: float) -> str:
    return f"{value:.1f}x" if value >= 10 else f"{value:.2f}x"


def print_table(
    rows: Sequence[tuple[str, float, float | None]], floor_ns: float, ld_ns: float
) -> None:
    header = ("contender", "median ns/decision", "x floor", "LaunchDarkly / it", "canary share")
    lines = [header]
    for name, ns, share in rows:
        lines.append(
            (
                name,
                f"{ns:,.1f}",
                _fmt_ratio(ns / floor_ns),
                _fmt_ratio(ld_ns / ns) if share is not None else "-",
                f"{share:.2%}" if share is not None else "-",
            )
        )
    print_aligned(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Per-decision cost of coalmine's decide vs an mmh3 floor, "
        "LaunchDarkly's variation and Unleash's is_enabled (10% rollout, offline)."
    )
    parser.add_argument(
        "--users",
        type=int,
        help=f"distinct user keys per round (default {DEFAULT_USERS:,}; {QUICK_USERS:,} with --quick)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help=f"timed rounds; the median is reported (default {DEFAULT_ROUNDS}; {QUICK_ROUNDS} with --quick)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    if args.users is None:
        args.users = QUICK_USERS if args.quick else DEFAULT_USERS
    if args.rounds is None:
        args.rounds = QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS
    if args.users < MIN_USERS:
        parser.error(f"--users must be at least {MIN_USERS:,} for the canary-share check")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sys.addaudithook(_refuse_network)
    for name in SDK_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)

    users: int = args.users
    rounds: int = args.rounds
    keys = [f"user-{i}" for i in range(users)]
    state = coalmine_state()
    coalmine = Contender("coalmine decide", decide, state, keys, _decision_is_canary)
    floor = Contender("mmh3 floor", floor_split, SALT + ":", keys, _is_true)
    empty = Contender("empty call (loop overhead)", empty_call, None, keys, None)

    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="coalmine-bench-"))
        ld = stack.enter_context(launchdarkly(tmp, keys))
        ul = stack.enter_context(unleash(tmp, keys))
        contenders = [coalmine, floor, ld, ul, empty]

        cohorts = {c.name: canary_keys(c, keys) for c in contenders}
        shares = {c.name: len(cohorts[c.name]) / users for c in contenders if c.is_canary}
        bad = {
            name: share
            for name, share in shares.items()
            if not SHARE_RANGE[0] <= share <= SHARE_RANGE[1]
        }
        if bad:
            for name, share in bad.items():
                print(
                    f"error: {name} put {share:.2%} of users in the canary, not ~10%",
                    file=sys.stderr,
                )
            return 1
        if cohorts[coalmine.name] != cohorts[floor.name]:
            print("error: coalmine's cohort differs from the mmh3 floor's", file=sys.stderr)
            return 1

        medians = measure(contenders, rounds)

    if _network_attempts:
        print(
            "error: something tried the network:", *_network_attempts, sep="\n  ", file=sys.stderr
        )
        return 1

    coalmine_ns, floor_ns = medians[coalmine.name], medians[floor.name]
    ld_ns, unleash_ns = medians[ld.name], medians[ul.name]
    vs_floor = coalmine_ns / floor_ns
    ld_vs = ld_ns / coalmine_ns
    if not args.json_only:
        print(
            f"decision cost, 10% user rollout: {users:,} users x {rounds} rounds, median of rounds"
            f" | Python {platform.python_version()}, mmh3 {version('mmh3')},"
            f" launchdarkly-server-sdk {version('launchdarkly-server-sdk')},"
            f" UnleashClient {version('UnleashClient')}"
        )
        print()
        print_table(
            [(c.name, medians[c.name], shares.get(c.name)) for c in contenders], floor_ns, ld_ns
        )
        print()
        goals = [
            (
                f"decide within {GOAL_VS_FLOOR:g}x of the mmh3 floor",
                vs_floor,
                vs_floor <= GOAL_VS_FLOOR,
            ),
            (
                f"LaunchDarkly at least {GOAL_LD_VS_COALMINE:g}x slower than decide",
                ld_vs,
                ld_vs >= GOAL_LD_VS_COALMINE,
            ),
        ]
        for text, ratio, ok in goals:
            print(f"goal: {text}: {_fmt_ratio(ratio)}  {'PASS' if ok else 'MISS'}")
    print(
        json.dumps(
            {
                "bench": "decision",
                "coalmine_ns": round(coalmine_ns, 1),
                "floor_ns": round(floor_ns, 1),
                "launchdarkly_ns": round(ld_ns, 1),
                "unleash_ns": round(unleash_ns, 1),
                "coalmine_vs_floor": round(vs_floor, 2),
                "launchdarkly_vs_coalmine": round(ld_vs, 1),
                "unleash_vs_coalmine": round(unleash_ns / coalmine_ns, 1),
                "empty_call_ns": round(medians[empty.name], 1),
                "users": users,
                "rounds": rounds,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
