"""The read path at edge speed: discovery, OFREP and routing polls next to /healthz, while writes go on.

One ``coalmine serve`` per store (SQLite, then PostgreSQL; ``--stores``), as
an operator runs it: one process with the API and the rollout controller,
signing keys set (each discovery and OFREP answer carries a signed routing
context, bound to its user), uvicorn's defaults (uvloop, httptools). On it:
the example app (``food-ordering``: ``place-order`` and ``notify-user``,
versions v1 and v2), its browser key and its sdk key. A thread keeps one
release after another running, each stepping exposure every second (19
steps of 5%, then promotion; the next release moves back), so the
controller writes to the store all through the runs and every answer's
snapshot keeps changing.

The targets, each a wrk Lua script (`_readpath_load`), every request for a
random user of 100,000:

* ``GET /healthz`` of the same server: the floor (FastAPI's cheapest route);
* ``GET /v1/discovery?app=..&user=..&key=<browser key>``: one user's answer;
* ``POST /ofrep/v1/evaluate/flags/food-ordering.place-order``: one OFREP flag,
  and ``POST /ofrep/v1/evaluate/flags``: every flag (bulk);
* ``GET /v1/apps/food-ordering/routing`` with the sdk key and the ETag of the
  last answer (a polling SDK: 304 until the release moves, then a 200), and
  without an ETag (every answer the whole snapshot).

Each runs ``wrk -t1 -c16 -d5s --latency`` (``--connections``, ``--duration``)
after a warm-up of each target, in 3 rounds (``--rounds``), every round
running every target in turn, so that a drift of the machine's speed touches
all of them alike; the table gives each figure's median over the rounds. p50
and p99 come from the same runs: 16 connections kept busy, so they include
the queueing of a saturated server. "CPU us/req" is the server process's CPU
time per request; "changes" how far the app's revision moved during the
target's runs (each move a change every answer must show: the caches drop
and reload the snapshot); "304s" the share of 304 answers of the polling
SDK; "db tx/s" (PostgreSQL) the transactions the bench's database finished
per second during the target's runs, whoever ran them (the releases' writes,
the caches' reloads and checks, the bench's own counting): what the reads
cost the database. Before timing, 200 users' discovery answers are checked against
`coalmine.core.routing.evaluate` over the routing snapshot of the same
revision; any wrk error or non-2xx/3xx answer exits 1.

Goals (``goal:`` lines, PASS or MISS; a MISS is reported, not turned into a
failing exit status: timings are noisy): on each store, every read path
reaches at least 0.5x the floor's requests per second, with p99 under 5 ms.

Run it from the repository root (PostgreSQL: ``COALMINE_BENCH_PG``, an admin
URL that may create databases, default ``postgresql://postgres@127.0.0.1:5432/test``)::

    .venv/bin/python bench/readpath.py                  # ~3.5 min: 2 stores x 3 rounds of 5 s runs
    .venv/bin/python bench/readpath.py --quick          # a smoke run, ~30 s
    .venv/bin/python bench/readpath.py --stores sqlite  # one store

It prints a table per store, the goals, and last one JSON line per store
(PostgreSQL last)::

    {"bench": "readpath", "healthz_rps": .., "discovery_rps": .., "discovery_p99_ms": ..,
     "routing_304_rps": .., "routing_304_p99_ms": .., "ofrep_rps": .., "store": "sqlite", ...}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import httpx

from _cpu import LoadMeter
from _errors import BenchError
from _procs import Server, free_port, run_bench
from _readpath_load import USERS, Target, statuses, targets
from _readpath_plane import (
    APP,
    SIGNING_KEYS,
    STRATEGY,
    DatabaseCounter,
    Plane,
    Releases,
    serve,
    store_url,
)
from _table import print_aligned
from _tools import WRK_VERSION, find_tool, tool_version, tools
from _wrk import WrkResult, median_of, run_wrk

DEFAULT_DURATION, QUICK_DURATION = 5, 1
DEFAULT_ROUNDS = 3
DEFAULT_WARMUP, QUICK_WARMUP = 2, 1
DEFAULT_CONNECTIONS = 16
GOAL_VS_FLOOR = 0.5
GOAL_P99_MS = 5.0
BUSY_CPUS = 0.25
STORES = ("sqlite", "postgresql")
CHECKED_USERS = 200


@dataclass
class Row:
    target: Target
    runs: list[WrkResult] = field(default_factory=list)
    changes: int = 0
    db_transactions: int | None = None
    """PostgreSQL transactions in the bench's database during the timed runs (all clients)"""
    seconds: float = 0.0
    ok: int = 0
    not_modified: int = 0

    @property
    def median(self) -> WrkResult:
        return median_of(self.runs)


@dataclass
class StoreResult:
    store: str
    rows: list[Row]
    releases: int
    background: float | None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Discovery, OFREP and routing polls of one coalmine serve next to its"
        " /healthz, on SQLite and on PostgreSQL, while releases change exposure (wrk)."
    )
    parser.add_argument(
        "--duration",
        type=int,
        help=f"seconds of each timed run (default {DEFAULT_DURATION}; {QUICK_DURATION} with --quick)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help=f"rounds, each running every target in turn; medians are reported"
        f" (default {DEFAULT_ROUNDS}; 1 with --quick)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=DEFAULT_CONNECTIONS,
        help=f"wrk connections (default {DEFAULT_CONNECTIONS})",
    )
    parser.add_argument(
        "--stores",
        default=",".join(STORES),
        help="comma list of sqlite and postgresql (default both, PostgreSQL last)",
    )
    parser.add_argument("--quick", action="store_true", help="one round of 1-second runs")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON lines")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = QUICK_DURATION if args.quick else DEFAULT_DURATION
    args.warmup = QUICK_WARMUP if args.quick else DEFAULT_WARMUP
    if args.rounds is None:
        args.rounds = 1 if args.quick else DEFAULT_ROUNDS
    if args.rounds < 1 or args.duration < 1 or args.connections < 1:
        parser.error("--rounds, --duration and --connections must be at least 1")
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    unknown = [s for s in stores if s not in STORES]
    if unknown or not stores:
        parser.error(f"--stores: use sqlite and/or postgresql, not {','.join(unknown) or '-'}")
    args.stores = sorted(stores, key=STORES.index)  # PostgreSQL's line last
    return args


def check_answers(plane: Plane, browser: str) -> None:
    """Discovery answers equal core routing over the snapshot of the same revision."""
    from coalmine.core import Keyring
    from coalmine.core.routing import evaluate
    from coalmine.core.snapshot import RoutingSnapshot

    keyring = Keyring.parse(SIGNING_KEYS)
    snapshot = RoutingSnapshot.from_dict(plane.call("GET", f"/v1/apps/{APP}/routing"))
    canary = 0
    for i in range(CHECKED_USERS):
        user = f"user-{i}"
        for _ in range(5):  # a step of the release may land between the two reads
            r = httpx.get(
                f"{plane.url}/v1/discovery", params={"app": APP, "user": user, "key": browser}
            )
            if r.status_code != 200:
                raise BenchError(f"discovery answered {r.status_code}: {r.text[:300]}")
            answer = r.json()
            if answer["revision"] == snapshot.revision:
                break
            snapshot = RoutingSnapshot.from_dict(plane.call("GET", f"/v1/apps/{APP}/routing"))
        else:
            raise BenchError("discovery and the routing snapshot never agreed on a revision")
        want = evaluate(snapshot.state, user, keyring=keyring, now=0)
        got = (answer["channel"], answer["versions"])
        if got != (str(want.channel), dict(want.versions)):
            raise BenchError(f"discovery for {user} says {got}, core routing {want}")
        canary += answer["channel"] == "canary"
    if not 0 < canary < CHECKED_USERS:
        raise BenchError(f"{canary} of {CHECKED_USERS} users canary: the release is not split")


def bench_store(args: argparse.Namespace, wrk_bin: str, store: str, folder: Path) -> StoreResult:
    port = free_port()
    with store_url(store, folder) as url, serve(url, port, folder, store) as server:
        plane = Plane(port)
        try:
            keys = plane.set_up()
            writer = Releases(port)
            writer.start()
            try:
                writer.wait_running()
                check_answers(plane, keys["browser"])
                rows = [Row(t) for t in targets(folder / store, keys["browser"], keys["sdk"])]
                meter = LoadMeter([server.proc.pid])
                meter.start()
                database = DatabaseCounter(url)
                for row in rows:
                    _run(wrk_bin, row, server, args, args.warmup, timed=False)
                for _ in range(args.rounds):
                    for row in rows:
                        before, began = plane.revision(), database.count()
                        _run(wrk_bin, row, server, args, args.duration, timed=True)
                        row.changes += plane.revision() - before
                        ended = database.count()
                        if began is not None and ended is not None:
                            row.db_transactions = (row.db_transactions or 0) + ended - began
                        row.seconds += args.duration
                background = meter.background_cpus()
            finally:
                writer.stop()
            if server.proc.poll() is not None:
                raise BenchError(f"{server.name} died during the run:\n{server.log_tail()}")
            return StoreResult(store, rows, writer.started_releases, background)
        finally:
            plane.close()


def _run(
    wrk_bin: str, row: Row, server: Server, args: argparse.Namespace, seconds: int, *, timed: bool
) -> None:
    url = f"http://127.0.0.1:{server.port}/"
    result, output = run_wrk(
        wrk_bin,
        row.target.script,
        url,
        connections=args.connections,
        seconds=seconds,
        server=server,
    )
    if timed:
        row.runs.append(result)
        ok, not_modified = statuses(output)
        row.ok += ok
        row.not_modified += not_modified


def _fmt_ms(value: float) -> str:
    return f"{value:.2f}"


def print_store(result: StoreResult, args: argparse.Namespace) -> None:
    floor = result.rows[0].median
    header = (
        "target",
        "rps",
        "x floor",
        "p50 ms",
        "p99 ms",
        "CPU us/req",
        "changes",
        "304s",
        "db tx/s",
    )
    lines: list[tuple[str, ...]] = [header]
    for row in result.rows:
        m = row.median
        answered = row.ok + row.not_modified
        share = f"{row.not_modified / answered:.1%}" if row.target.key == "routing_304" else "-"
        lines.append(
            (
                row.target.title,
                f"{m.rps:,.0f}",
                f"{m.rps / floor.rps:.2f}x",
                _fmt_ms(m.p50_ms),
                _fmt_ms(m.p99_ms),
                "-" if m.cpu_us is None else f"{m.cpu_us:,.0f}",
                str(row.changes),
                share if answered else "-",
                "-" if row.db_transactions is None else f"{row.db_transactions / row.seconds:.0f}",
            )
        )
    print(f"store: {result.store} ({result.releases} releases started during the runs)")
    print_aligned(lines)
    if len(result.rows[0].runs) > 1:
        print(
            f"  {result.rows[0].target.title}: each round p99 "
            + ", ".join(_fmt_ms(r.p99_ms) for r in result.rows[0].runs)
            + " ms"
        )
        for row in result.rows[1:]:
            ratios = [r.rps / f.rps for r, f in zip(row.runs, result.rows[0].runs, strict=True)]
            p99s = [r.p99_ms for r in row.runs]
            print(
                f"  {row.target.title}: each round x floor "
                + ", ".join(f"{v:.2f}x" for v in ratios)
                + "; p99 "
                + ", ".join(_fmt_ms(v) for v in p99s)
                + " ms"
            )
    if result.background is not None:
        busy = result.background >= BUSY_CPUS
        print(
            f"other processes kept {result.background:.2f} of {os.cpu_count()} CPUs busy"
            f"{': the numbers are disturbed, run again on a quiet machine' if busy else ''}"
        )
    print()


def goals(result: StoreResult) -> list[str]:
    floor = result.rows[0].median.rps
    lines = []
    for row in result.rows[1:]:
        m = row.median
        ok = m.rps >= GOAL_VS_FLOOR * floor and m.p99_ms < GOAL_P99_MS
        lines.append(
            f"goal: {result.store} {row.target.title}: >= {GOAL_VS_FLOOR}x floor rps and p99 <"
            f" {GOAL_P99_MS:g} ms: {m.rps / floor:.2f}x, {m.p99_ms:.2f} ms  {'PASS' if ok else 'MISS'}"
        )
    return lines


def json_line(result: StoreResult, args: argparse.Namespace) -> str:
    by = {row.target.key: row for row in result.rows}

    def rps(key: str) -> float:
        return round(by[key].median.rps, 1)

    def p99(key: str) -> float:
        return round(by[key].median.p99_ms, 3)

    routing_304 = by["routing_304"]
    answered = routing_304.ok + routing_304.not_modified
    out: dict[str, object] = {
        "bench": "readpath",
        "healthz_rps": rps("healthz"),
        "discovery_rps": rps("discovery"),
        "discovery_p99_ms": p99("discovery"),
        "routing_304_rps": rps("routing_304"),
        "routing_304_p99_ms": p99("routing_304"),
        "ofrep_rps": rps("ofrep"),
        "store": result.store,
        "ofrep_p99_ms": p99("ofrep"),
        "ofrep_bulk_rps": rps("ofrep_bulk"),
        "ofrep_bulk_p99_ms": p99("ofrep_bulk"),
        "routing_rps": rps("routing"),
        "routing_p99_ms": p99("routing"),
        "healthz_p99_ms": p99("healthz"),
        "routing_304_share": round(routing_304.not_modified / answered, 4) if answered else None,
        "changes": sum(row.changes for row in result.rows),
        "db_tx_per_s": _db_rate(result.rows),
        "releases": result.releases,
        "min_vs_floor": round(
            min(row.median.rps for row in result.rows[1:]) / by["healthz"].median.rps, 3
        ),
        "max_p99_ms": round(max(row.median.p99_ms for row in result.rows[1:]), 3),
        "rounds": args.rounds,
        "duration_s": args.duration,
        "connections": args.connections,
        "users": USERS,
        "background_cpus": None if result.background is None else round(result.background, 2),
    }
    return json.dumps(out)


def _db_rate(rows: Sequence[Row]) -> float | None:
    """PostgreSQL transactions per second during the reads' timed runs (None on SQLite)."""
    reads = [r for r in rows[1:] if r.db_transactions is not None]
    if not reads:
        return None
    return round(sum(r.db_transactions or 0 for r in reads) / sum(r.seconds for r in reads), 1)


def run(args: argparse.Namespace) -> int:
    wrk_bin = find_tool("wrk") or tools()[1]
    versions = (
        f"{os.cpu_count()} CPUs, Python {platform.python_version()},"
        f" uvicorn {version('uvicorn')}, fastapi {version('fastapi')},"
        f" wrk {tool_version([wrk_bin, '-v'], WRK_VERSION)}"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="coalmine-bench-readpath-") as tmp:
        for store in args.stores:
            folder = Path(tmp)
            (folder / store).mkdir()
            results.append(bench_store(args, wrk_bin, store, folder))
    if not args.json_only:
        print(f"the read path of one coalmine serve (API + controller, 1 process) | {versions}")
        print(
            f"wrk -t1 -c{args.connections} -d{args.duration}s --latency after a {args.warmup} s"
            f" warm-up, {args.rounds} round(s), medians; {USERS:,} users, random per request;"
            f" signing keys set; releases stepping exposure every second ({STRATEGY.count(',')}"
            " steps, then the next release)"
        )
        print()
        for result in results:
            print_store(result, args)
        for result in results:
            for line in goals(result):
                print(line)
    for result in results:
        print(json_line(result, args))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(run, args)


if __name__ == "__main__":
    sys.exit(main())
