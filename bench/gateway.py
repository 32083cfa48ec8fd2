"""What the coalmine gateway costs: throughput and added latency, next to nginx split_clients.

Three targets answer the same load on loopback, one after another, in one run
(five with the Lambda rows, below):

* ``direct``: the upstream itself, an nginx (1 worker) answering
  ``return 200 "ok\\n"`` for any path: the fastest upstream there is, so that
  what a proxy costs shows;
* ``nginx split_clients``: nginx (1 worker) doing the same user split,
  ``split_clients "${http_x_user_id}" $variant { 10% canary; * stable; }``,
  proxying to the upstream over keep-alive connections (one upstream block per
  variant, the path rewritten to ``/v1`` or ``/v2`` as the gateway does) and
  adding an ``x-variant`` response header;
* ``coalmine gateway``: `coalmine.gateway` under uvicorn (1 worker, uvloop,
  the gateway's httptools protocol, access log off: `uvicorn_options`, as
  ``coalmine gateway`` runs it) in its own
  process, from a `StaticSource` snapshot: app ``bench`` whose one function
  ``fn`` has versions v1 and v2 (HTTP targets ``/v1`` and ``/v2`` on the
  upstream) and a user-mode release RUNNING at 10%, users identified by
  ``x-user-id``. With a signing keyring, as in production (``--no-keyring``:
  without), so each call also signs the routing context it sends downstream.

The Lambda rows (``--no-lambda`` leaves them out): a minimal Lambda Invoke
endpoint (nginx answering every ``POST /2015-03-31/functions/{name}/invocations``
with an API Gateway proxy response whose body is ``ok``), called directly, and
a second gateway process whose versions are the Lambda versions
``lambda:fn:1`` / ``lambda:fn:2``, invoking them through that endpoint as a
deployed one invokes AWS (SigV4-signed, reached through
``AWS_ENDPOINT_URL_LAMBDA``; `coalmine.gateway.LambdaTarget`). Its added
latency is over calling the Invoke endpoint directly.

Load comes from wrk (one thread). A Lua script gives every request a random
``x-user-id`` from a fixed pool of 100,000 users. After a 2-second warm-up of
each target, the timed runs go in ``--rounds`` (3) rounds, each running every
target in turn, so that a drift in the machine's speed touches all targets
alike; the table gives each figure's median over the rounds, and the ratio and
added p99 of every round are printed too. Per target and round:

* throughput: ``wrk -t1 -c64 -d5s --latency`` (``--connections``, ``--duration``),
  reporting requests per second, and the CPU time the
  target's own processes spent per request (from /proc: nginx's master and
  worker, the gateway's process; not the upstream's, not wrk's);
* latency at moderate load: ``wrk -t1 -c4 -d5s --latency`` where each connection
  waits a random time before each request, exponential with a mean of
  ``--pace-ms`` (10) ms (wrk's Lua ``delay``), so every target is offered at most
  about 400 requests per second, spread out as from independent users: a load
  well under the capacity of each (``--pace-ms 0``: back to back, which keeps a
  one-worker Python server saturated). p50 and p99 come from wrk's latency
  distribution; "added" is a proxy's percentile minus the direct one.

The machine should be quiet: the script measures how many CPUs other processes
kept busy during the runs (from /proc/stat, less its own processes' time) and
says so when that is a quarter of a CPU or more.

Before timing, a few hundred users go through each proxy: every answer must be
200 with the upstream's body, nginx must put some users in each variant, and
the gateway's ``x-coalmine-channel`` and ``x-coalmine-version`` must equal what
`coalmine.core.decide` says for each user; otherwise the script exits 1 (as it
does when wrk sees errors or non-2xx answers). Every process it starts runs in
its own process group and is stopped on the way out, whatever happens.

nginx and wrk come from Debian's packages: when either is missing the script
runs ``bench/install-tools.sh`` (apt-get, needs root) and exits 1 if that fails.

Run it from the repository root::

    .venv/bin/python bench/gateway.py                 # ~100 s: 3 rounds of 5 s runs
    .venv/bin/python bench/gateway.py --quick         # a smoke run, ~15 s
    .venv/bin/python bench/gateway.py --duration 20 --connections 128
    .venv/bin/python bench/gateway.py --profile-gateway /tmp/gw.prof   # cProfile the gateway

It prints a table, the goals (the gateway adds under 1 ms at p99 at moderate
load; it reaches at least 0.2x nginx split_clients' throughput, both with one
worker; it adds under 1 ms at p99 to a Lambda invoke) with PASS or MISS, and
last one JSON line::

    {"bench": "gateway", "direct_rps": .., "coalmine_rps": .., "nginx_rps": ..,
     "coalmine_added_p99_ms": .., "nginx_added_p99_ms": .., ...,
     "rounds": 3, "coalmine_vs_nginx_rps_rounds": [..], "coalmine_added_p99_ms_rounds": [..],
     ..., "lambda_direct_rps": .., "lambda_rps": .., "lambda_added_p99_ms": .., ...}

A MISS is reported, not turned into a failing exit status: timings are noisy.

This file is the main; its parts are beside it: `_gateway_routing` (the
routing measured and its check), `_gateway_serve` (the gateway process),
`_nginx`, `_wrk`, `_cpu`, `_procs`, `_tools` and `_gateway_report`.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from importlib.metadata import version
from pathlib import Path

from _cpu import LoadMeter
from _errors import BenchError
from _gateway_report import Row, report
from _gateway_routing import FUNCTION, USERS, bench_snapshot, check_lambda, check_routing
from _gateway_serve import serve_gateway
from _nginx import LAMBDA_BODY, SPLIT_BODY, UPSTREAM_BODY, nginx_config
from _procs import Server, free_ports, run_bench, started
from _tools import NGINX_VERSION, WRK_VERSION, tool_version, tools
from _wrk import Wrk, WrkResult, median_of, write_scripts

DEFAULT_DURATION, QUICK_DURATION = 5, 1
DEFAULT_ROUNDS = 3
DEFAULT_WARMUP, QUICK_WARMUP = 2, 1
DEFAULT_CONNECTIONS = 64
DEFAULT_LATENCY_CONNECTIONS = 4
DEFAULT_PACE_MS = 10


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Throughput and added latency of the coalmine gateway over calling the"
        " upstream directly, next to nginx split_clients (loopback, wrk, one worker each)."
    )
    parser.add_argument(
        "--duration",
        type=int,
        help=f"seconds of each timed wrk run (default {DEFAULT_DURATION}; {QUICK_DURATION} with --quick)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=DEFAULT_CONNECTIONS,
        help=f"wrk connections of the throughput runs (default {DEFAULT_CONNECTIONS})",
    )
    parser.add_argument(
        "--latency-connections",
        type=int,
        default=DEFAULT_LATENCY_CONNECTIONS,
        help=f"wrk connections of the latency runs (default {DEFAULT_LATENCY_CONNECTIONS})",
    )
    parser.add_argument(
        "--pace-ms",
        type=int,
        default=DEFAULT_PACE_MS,
        help="mean ms each connection of the latency runs waits before a request,"
        f" exponentially distributed (default {DEFAULT_PACE_MS}; 0: back to back)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help=f"rounds of timed runs, each running every target in turn; medians are reported"
        f" (default {DEFAULT_ROUNDS}; 1 with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="one round of 1-second runs, for a smoke test"
    )
    parser.add_argument(
        "--no-keyring",
        action="store_true",
        help="run the gateway without signing keys (no routing context is signed downstream)",
    )
    parser.add_argument(
        "--profile-gateway",
        metavar="FILE",
        help="run the gateway under cProfile (CPU time) and write its stats to FILE;"
        " this slows it down several times",
    )
    parser.add_argument(
        "--no-lambda",
        action="store_true",
        help="leave out the Lambda rows (the gateway invoking Lambda versions)",
    )
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = QUICK_DURATION if args.quick else DEFAULT_DURATION
    args.warmup = QUICK_WARMUP if args.quick else DEFAULT_WARMUP
    if args.rounds is None:
        args.rounds = 1 if args.quick else DEFAULT_ROUNDS
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.duration < 1:
        parser.error("--duration must be at least 1 (wrk counts whole seconds)")
    if args.connections < 1 or args.latency_connections < 1:
        parser.error("connections must be at least 1")
    if args.pace_ms < 0:
        parser.error("--pace-ms must not be negative")
    return args


def run(args: argparse.Namespace) -> int:
    nginx_bin, wrk_bin = tools()
    versions = (
        f"{os.cpu_count()} CPUs, Python {platform.python_version()},"
        f" uvicorn {version('uvicorn')}, httptools {version('httptools')}, uvloop {version('uvloop')},"
        f" nginx {tool_version([nginx_bin, '-v'], NGINX_VERSION)},"
        f" wrk {tool_version([wrk_bin, '-v'], WRK_VERSION)}"
    )
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="coalmine-bench-gw-")))
        tmp.chmod(0o755)  # nginx workers may run as another user than the master
        wrk = Wrk(wrk_bin, *write_scripts(tmp, USERS), USERS)
        up_port, split_port, gw_port, lambda_port, gwl_port = free_ports(5)
        upstream_url = f"http://127.0.0.1:{up_port}"

        def nginx(name: str, title: str, port: int, body: str) -> Server:
            conf = nginx_config(tmp, name, body)
            cmd = [nginx_bin, "-p", f"{tmp}/", "-c", str(conf), "-e", f"{tmp}/{name}-error.log"]
            logs = (tmp / f"{name}.out", tmp / f"{name}-error.log")
            return stack.enter_context(started(title, cmd, port, logs))

        direct = nginx("upstream", "upstream nginx", up_port, UPSTREAM_BODY.format(port=up_port))
        split = nginx(
            "split",
            "nginx split_clients",
            split_port,
            SPLIT_BODY.format(port=split_port, upstream=up_port, function=FUNCTION),
        )
        gw_cmd = [sys.executable, str(Path(__file__).resolve()), "--serve-gateway"]
        gw_cmd += [str(gw_port), upstream_url]
        if not args.no_keyring:
            gw_cmd.append("--keyring")
        if args.profile_gateway:
            gw_cmd += ["--profile", str(Path(args.profile_gateway).resolve())]
        gateway = stack.enter_context(
            started("coalmine gateway", gw_cmd, gw_port, (tmp / "gateway.out",))
        )

        check_routing(direct, split, gateway, bench_snapshot(upstream_url))

        targets = [
            ("direct (upstream)", f"{upstream_url}/v1/", direct),
            ("nginx split_clients", f"http://127.0.0.1:{split_port}/{FUNCTION}/", split),
            ("coalmine gateway", f"http://127.0.0.1:{gw_port}/{FUNCTION}/", gateway),
        ]
        if not args.no_lambda:
            invoke = nginx(
                "lambda", "Lambda Invoke", lambda_port, LAMBDA_BODY.format(port=lambda_port)
            )
            invoke_url = f"http://127.0.0.1:{lambda_port}"
            gwl_cmd = [*gw_cmd[:2], "--serve-gateway", str(gwl_port), invoke_url, "--lambda"]
            if not args.no_keyring:
                gwl_cmd.append("--keyring")
            if args.profile_gateway:
                gwl_cmd += ["--profile", str(Path(args.profile_gateway).resolve()) + ".lambda"]
            gateway_lambda = stack.enter_context(
                started("coalmine gateway (Lambda)", gwl_cmd, gwl_port, (tmp / "gwl.out",))
            )
            check_lambda(invoke, gateway_lambda)
            targets += [
                (
                    "Lambda Invoke (direct)",
                    f"{invoke_url}/2015-03-31/functions/{FUNCTION}/invocations?Qualifier=1",
                    invoke,
                ),
                (
                    "coalmine gateway -> Lambda",
                    f"http://127.0.0.1:{gwl_port}/{FUNCTION}/",
                    gateway_lambda,
                ),
            ]
        meter = LoadMeter([server.proc.pid for _, _, server in targets])
        meter.start()
        for _, url, _ in targets:
            wrk.run(url, connections=args.connections, seconds=args.warmup)
        # rounds, each running every target in turn: a drift of the machine's speed
        # then touches all targets alike, and the median of the rounds is reported
        throughput: list[list[WrkResult]] = [[] for _ in targets]
        latency: list[list[WrkResult]] = [[] for _ in targets]
        for _ in range(args.rounds):
            for i, (_, url, server) in enumerate(targets):
                throughput[i].append(
                    wrk.run(url, connections=args.connections, seconds=args.duration, server=server)
                )
            for i, (_, url, _) in enumerate(targets):
                latency[i].append(
                    wrk.run(
                        url,
                        connections=args.latency_connections,
                        seconds=args.duration,
                        pace_ms=args.pace_ms,
                    )
                )
        background = meter.background_cpus()
        for _, _, server in targets:
            if server.proc.poll() is not None:
                raise BenchError(f"{server.name} died during the run:\n{server.log_tail()}")
        gateway_log = gateway.log_tail()

    rows = [
        Row(name, median_of(t), median_of(lat), tuple(zip(t, lat, strict=True)))
        for (name, _, _), t, lat in zip(targets, throughput, latency, strict=True)
    ]
    report(args, rows, versions, background)
    if gateway_log:
        print(f"the gateway's log:\n{gateway_log}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve-gateway"]:
        return serve_gateway(argv[1:])
    args = parse_args(argv)
    return run_bench(run, args)


if __name__ == "__main__":
    sys.exit(main())
