"""The gateway under a sustained load while releases move: errors, p99 and memory growth.

Real processes on loopback, each in its own process group and stopped on the
way out whatever happens:

* the upstream: nginx (1 worker) answering ``ok`` on every path, except paths
  ending in ``/boom``, which it answers 500 (the errors the upstream was told
  to return);
* the control plane: ``coalmine serve`` on a temporary SQLite file (controller
  interval 0.2 s), with app ``soak`` applied (function ``fn``, versions v1 and
  v2 at ``/v1`` and ``/v2`` on the upstream; no analysis, so the only rollback
  is the operator's below and the steps go by the clock: a judged step would
  wait for evidence this short run cannot gather);
* the gateway: ``coalmine gateway --user-header x-user-id`` following that
  control plane with an sdk key.

The load is open-loop: an asyncio client (httpx) sends ``--rate`` requests a
second (100) whatever the answers do, each for a random user of 10,000; 1 in
100 goes to ``/fn/boom``. A request's latency runs from when it is sent; when
the client itself cannot keep the rate (a busy machine), ``behind_ms`` says
how late the latest request went out.

Timeline, as fractions of ``--duration`` (60 s): a warm-up to 0.2 with no
release; release 1 (``10%``, then ``50%``) starts at 0.2 and is rolled back by
the operator at 0.4; release 2 (``20%``, ``60%``, ``100%``) starts at 0.5 and
is promoted by the controller at about 0.8. The gateway's RSS (from /proc)
is sampled every second; its growth is the last sample over the one at the
end of the warm-up.

It exits 1 unless: every answer is 200 with ``ok`` apart from the ``/boom``
ones, which are 500 (``errors`` counts every other answer and every failed
request: 0 is the goal); release 1 ended rolled back and release 2 promoted;
some answers came from the canary while each release ran and none sent from
half a second after the rollback on; RSS grew under 10%.

Run it from the repository root::

    .venv/bin/python bench/soak.py                  # 60 s (make soak)
    .venv/bin/python bench/soak.py --quick          # a smoke run, 8 s at 50/s
    .venv/bin/python bench/soak.py --duration 300 --rate 200

It prints a table, then one JSON line::

    {"bench": "soak", "requests": .., "errors": .., "p99_ms": .., "rss_growth_pct": ..,
     "expected_errors": .., "p50_ms": .., "rate": .., "duration_s": .., ...}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from _errors import BenchError
from _nginx import nginx_config
from _procs import Server, free_ports, run_bench, started
from _table import print_aligned
from _tools import find_tool

APP, FUNCTION = "soak", "fn"
TOKEN = "cm_soak_admin_token_0123456789abcdef"
USERS = 10_000
BOOM_EVERY = 100
RSS_GROWTH_GOAL_PCT = 10.0
ROLLBACK_GRACE = 0.5

UPSTREAM_BODY = """\
    server {{
        listen 127.0.0.1:{port};
        default_type text/plain;
        location ~ /boom$ {{ return 500 "boom\\n"; }}
        location / {{ return 200 "ok\\n"; }}
    }}"""

SPEC = """\
app: {app}
functions:
  {fn}:
    current: v1
    versions:
      v1: http://127.0.0.1:{upstream}/v1
      v2: http://127.0.0.1:{upstream}/v2
release:
  route_mode: user
"""


@dataclass
class Tally:
    """What the load saw, by phase of the timeline."""

    latencies: list[float] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    expected_errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    canary: dict[str, int] = field(default_factory=dict)
    phase: str = "warm-up"
    behind: float = 0.0
    """the longest a request was sent after it was due (the load generator's lag)"""

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class ControlPlane:
    """The CLI against the `coalmine serve` under test."""

    def __init__(self, url: str, database_url: str) -> None:
        self.url, self.database_url = url, database_url

    def cli(self, *args: str) -> str:
        env = dict(os.environ, COALMINE_URL=self.url, COALMINE_TOKEN=TOKEN)
        env["COALMINE_DATABASE_URL"] = self.database_url
        proc = subprocess.run(
            [sys.executable, "-m", "coalmine.cli", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )
        if proc.returncode != 0:
            raise BenchError(f"coalmine {' '.join(args)} -> {proc.returncode}: {proc.stderr}")
        return proc.stdout

    def release(self, rid: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.cli("release", "status", rid, "--json"))
        return out


async def load(port: int, rate: float, duration: float, tally: Tally) -> None:
    """Send ``rate`` requests a second for ``duration`` seconds, open-loop."""
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    rng = random.Random(1)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=10
    ) as client:

        async def one(due: float, user: str, boom: bool) -> None:
            phase = tally.phase
            path = f"/{FUNCTION}/boom" if boom else f"/{FUNCTION}/order"
            sent = time.monotonic()
            tally.behind = max(tally.behind, sent - due)
            try:
                r = await client.get(path, headers={"x-user-id": user})
            except httpx.HTTPError as exc:
                tally.error(type(exc).__name__)
                return
            tally.latencies.append(time.monotonic() - sent)
            if boom and r.status_code == 500:
                tally.expected_errors += 1
            elif boom or r.status_code != 200 or r.text != "ok\n":
                tally.error(f"status {r.status_code}")
            if r.headers.get("x-coalmine-channel") == "canary":
                tally.canary[phase] = tally.canary.get(phase, 0) + 1

        start = time.monotonic()
        tasks: set[asyncio.Task[None]] = set()
        i = 0
        while True:
            due = start + i / rate
            # a client too slow for the rate falls behind (`behind` says by how much)
            # but never runs past the timeline
            if due - start >= duration or time.monotonic() - start >= duration:
                break
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tally.requests += 1
            user = f"user-{rng.randrange(USERS)}"
            task = asyncio.create_task(one(due, user, i % BOOM_EVERY == BOOM_EVERY - 1))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.gather(*tasks)


def operate(plane: ControlPlane, duration: float, start: float, tally: Tally) -> dict[str, Any]:
    """The timeline's releases; what happened to them."""

    def at(fraction: float) -> None:
        left = start + fraction * duration - time.monotonic()
        if left > 0:
            time.sleep(left)

    step = max(1, round(0.1 * duration))
    at(0.2)
    tally.phase = "release 1"
    first = json.loads(
        plane.cli(
            "release",
            "start",
            APP,
            "--set",
            f"{FUNCTION}=v2",
            "--strategy",
            f"10%:{step}s, 50%:{10 * step}s, 100%",
            "--json",
        )
    )["id"]
    at(0.4)
    plane.cli("release", "rollback", APP, "--reason", "soak: the operator's rollback")
    # the gateway hears of the rollback on its stream a moment after the CLI returns:
    # requests sent in that moment may still be canary; from half a second on, none
    tally.phase = "rolling back"
    time.sleep(ROLLBACK_GRACE)
    tally.phase = "rolled back"
    at(0.5)
    tally.phase = "release 2"
    second = json.loads(
        plane.cli(
            "release",
            "start",
            APP,
            "--set",
            f"{FUNCTION}=v2",
            "--strategy",
            f"20%:{step}s, 60%:{step}s, 100%",
            "--json",
        )
    )["id"]
    return {"first": first, "second": second}


def run(args: argparse.Namespace) -> int:
    nginx = find_tool("nginx")
    if nginx is None:
        raise SystemExit("error: nginx missing: run bench/install-tools.sh")
    upstream_port, plane_port, gateway_port = free_ports(3)
    with tempfile.TemporaryDirectory(prefix="coalmine-soak-") as tmp, ExitStack() as stack:
        prefix = Path(tmp)
        body = UPSTREAM_BODY.format(port=upstream_port)
        conf = nginx_config(prefix, "upstream", body)
        stack.enter_context(
            started(
                "upstream",
                [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "up-err.log")],
                upstream_port,
                (prefix / "upstream.out",),
            )
        )
        database_url = f"sqlite:///{prefix / 'soak.db'}"
        os.environ["COALMINE_BOOTSTRAP_TOKEN"] = TOKEN
        cm = [sys.executable, "-m", "coalmine.cli"]
        serve_options = [
            "--database-url",
            database_url,
            "--interval",
            "0.2",
            "--log-level",
            "warning",
        ]
        stack.enter_context(
            started(
                "coalmine serve",
                [*cm, "serve", "--port", str(plane_port), *serve_options],
                plane_port,
                (prefix / "serve.out",),
            )
        )
        plane = ControlPlane(f"http://127.0.0.1:{plane_port}", database_url)
        spec = prefix / "coalmine.yaml"
        spec.write_text(SPEC.format(app=APP, fn=FUNCTION, upstream=upstream_port))
        plane.cli("apply", "-f", str(spec))
        created = json.loads(
            plane.cli("token", "create", "--name", "gw", "--role", "sdk", "--app", APP, "--json")
        )
        gateway_options = ["--app", APP, "--control-plane", plane.url, "--sdk-key"]
        gateway_options += [
            created["token"],
            "--user-header",
            "x-user-id",
            "--log-level",
            "warning",
        ]
        gateway: Server = stack.enter_context(
            started(
                "coalmine gateway",
                [*cm, "gateway", "--port", str(gateway_port), *gateway_options],
                gateway_port,
                (prefix / "gateway.out",),
            )
        )
        return soak(args, plane, gateway)


def soak(args: argparse.Namespace, plane: ControlPlane, gateway: Server) -> int:
    tally = Tally()
    rss: list[tuple[float, int]] = []
    stop = threading.Event()
    start = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            try:
                rss.append((time.monotonic() - start, rss_kib(gateway.proc.pid)))
            except (OSError, BenchError):  # the gateway is gone: the checks below say so
                return
            stop.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    outcome: dict[str, Any] = {}
    failure: list[BaseException] = []

    def operator() -> None:
        try:
            outcome.update(operate(plane, args.duration, start, tally))
        except BaseException as exc:  # reported below, after the load ends
            failure.append(exc)

    op = threading.Thread(target=operator, daemon=True)
    op.start()
    asyncio.run(load(gateway.port, args.rate, args.duration, tally))
    op.join(timeout=60)
    stop.set()
    sampler.join(timeout=5)
    if failure or "second" not in outcome:
        why = failure[0] if failure else "it did not finish"
        raise BenchError(f"operating the releases failed: {why}\n{gateway.log_tail()}")
    if gateway.proc.poll() is not None or not rss:
        raise BenchError(f"the gateway exited during the run:\n{gateway.log_tail()}")
    first = plane.release(outcome["first"])
    second = plane.release(outcome["second"])

    warm = [kib for t, kib in rss if t <= 0.2 * args.duration] or [rss[0][1]]
    base, last = warm[-1], rss[-1][1]
    growth = 100.0 * (last - base) / base
    p50, p99 = percentile(tally.latencies, 0.5) * 1000, percentile(tally.latencies, 0.99) * 1000

    checks = [
        ("errors (not told by the upstream)", tally.errors == 0, str(tally.error_kinds or 0)),
        ("release 1 rolled back", first["phase"] == "rolled_back", first["phase"]),
        ("release 2 promoted", second["phase"] == "promoted", second["phase"]),
        ("canary answers in release 1", tally.canary.get("release 1", 0) > 0, ""),
        ("canary answers in release 2", tally.canary.get("release 2", 0) > 0, ""),
        ("no canary after the rollback", tally.canary.get("rolled back", 0) == 0, ""),
        (f"RSS growth < {RSS_GROWTH_GOAL_PCT:g}%", growth < RSS_GROWTH_GOAL_PCT, f"{growth:.1f}%"),
    ]
    print_aligned(
        [
            ("measure", "value"),
            ("duration (s)", f"{args.duration:g}"),
            ("rate (req/s)", f"{args.rate:g}"),
            ("requests", str(tally.requests)),
            ("errors", str(tally.errors)),
            ("expected 500s (/boom)", str(tally.expected_errors)),
            ("p50 (ms)", f"{p50:.2f}"),
            ("p99 (ms)", f"{p99:.2f}"),
            ("load generator behind, max (ms)", f"{tally.behind * 1000:.1f}"),
            ("gateway RSS after warm-up (MiB)", f"{base / 1024:.1f}"),
            ("gateway RSS at the end (MiB)", f"{last / 1024:.1f}"),
            ("RSS growth (%)", f"{growth:.1f}"),
            *((f"canary answers: {k}", str(v)) for k, v in sorted(tally.canary.items())),
        ]
    )
    print()
    for name, ok, detail in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name}{'  ' + detail if detail else ''}")
    print(
        json.dumps(
            {
                "bench": "soak",
                "requests": tally.requests,
                "errors": tally.errors,
                "p99_ms": round(p99, 2),
                "rss_growth_pct": round(growth, 2),
                "expected_errors": tally.expected_errors,
                "p50_ms": round(p50, 2),
                "behind_ms": round(tally.behind * 1000, 1),
                "rate": args.rate,
                "duration_s": args.duration,
                "canary_answers": tally.canary,
                "first_release": first["phase"],
                "second_release": second["phase"],
            }
        )
    )
    return 0 if all(ok for _, ok, _ in checks) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (60)")
    parser.add_argument("--rate", type=float, default=100.0, help="requests a second (100)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 8 s at 50/s")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rate = 8.0, 50.0
    if args.duration < 5 or args.rate <= 0:
        parser.error("--duration must be at least 5 and --rate positive")
    return run_bench(run, args)


if __name__ == "__main__":
    sys.exit(main())
