"""What the coalmine gateway costs: throughput and added latency, next to nginx split_clients.

Three targets answer the same load on loopback, one after another, in one run:

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
worker) with PASS or MISS, and last one JSON line::

    {"bench": "gateway", "direct_rps": .., "coalmine_rps": .., "nginx_rps": ..,
     "coalmine_added_p99_ms": .., "nginx_added_p99_ms": .., ...,
     "rounds": 3, "coalmine_vs_nginx_rps_rounds": [..], "coalmine_added_p99_ms_rounds": [..]}

A MISS is reported, not turned into a failing exit status: timings are noisy.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from types import FrameType

from _table import print_aligned
from coalmine.core import (
    Channel,
    Keyring,
    Phase,
    Release,
    RouteMode,
    RoutingState,
    decide,
    parse_strategy,
)
from coalmine.core.snapshot import RoutingSnapshot

HERE = Path(__file__).resolve().parent
INSTALL_SCRIPT = HERE / "install-tools.sh"
APP, FUNCTION, RELEASE_ID = "bench", "fn", "r-bench"
SALT = "bench-gateway-salt-01"
EXPOSURE = 1000
"""basis points of 10000: a 10% rollout, as nginx's ``10% canary``"""
BENCH_KEY = b"bench-gateway-signing-key-0123456789"
USERS = 100_000
"""the pool the wrk script draws ``x-user-id`` from: ``user-0`` ... ``user-99999``"""
CHECK_USERS = 300
"""users sent through each proxy before timing, to check the routing"""
GOAL_ADDED_P99_MS = 1.0
GOAL_VS_NGINX = 0.2
DEFAULT_DURATION, QUICK_DURATION = 5, 1
DEFAULT_ROUNDS = 3
DEFAULT_WARMUP, QUICK_WARMUP = 2, 1
DEFAULT_CONNECTIONS = 64
DEFAULT_LATENCY_CONNECTIONS = 4
DEFAULT_PACE_MS = 10
START_TIMEOUT = 20.0
BUSY_CPUS = 0.25
"""CPUs that other processes may keep busy before the run is called disturbed"""


class BenchError(Exception):
    """The run cannot give trustworthy numbers; the message says why (exit 1)."""


# --- the routing configuration ----------------------------------------------


def bench_snapshot(upstream: str) -> RoutingSnapshot:
    """App ``bench``: ``fn`` v1 -> v2 in a RUNNING user-mode release at 10%."""
    current = {FUNCTION: "v1"}
    release = Release.start(
        id=RELEASE_ID,
        app=APP,
        current=current,
        changes={FUNCTION: "v2"},
        salt=SALT,
        strategy=parse_strategy("Canary10Percent5Minutes"),
        route_mode=RouteMode.USER,
    )
    release = dataclasses.replace(release, phase=Phase.RUNNING, exposure=EXPOSURE)
    state = RoutingState(app=APP, versions=current, release=release)
    targets = {FUNCTION: {"v1": f"{upstream}/v1", "v2": f"{upstream}/v2"}}
    return RoutingSnapshot(state, 1, targets)


# --- the gateway subprocess ---------------------------------------------------


def serve_gateway(argv: Sequence[str]) -> int:
    """The gateway process: ``gateway.py --serve-gateway PORT UPSTREAM [--keyring] [--profile F]``."""
    parser = argparse.ArgumentParser(prog="gateway.py --serve-gateway")
    parser.add_argument("port", type=int)
    parser.add_argument("upstream")
    parser.add_argument("--keyring", action="store_true")
    parser.add_argument("--profile")
    args = parser.parse_args(argv)

    import uvicorn

    from coalmine.gateway import GatewayConfig, StaticSource, create_gateway
    from coalmine.gateway.server import uvicorn_options

    keyring = Keyring.single(BENCH_KEY) if args.keyring else None
    config = GatewayConfig(app=APP, keyring=keyring)
    gateway = create_gateway(config, StaticSource(bench_snapshot(args.upstream)))

    def run() -> None:
        uvicorn.run(  # as `coalmine gateway` runs it
            gateway,
            host="127.0.0.1",
            port=args.port,
            loop="uvloop",
            log_level="warning",
            timeout_graceful_shutdown=1,
            **uvicorn_options(),
        )

    # uvicorn re-raises the SIGTERM it stopped on once it is done: make that an exit
    # that unwinds (so the profile below is written), not a kill
    signal.signal(signal.SIGTERM, _terminate)
    if args.profile is None:
        run()
        return 0
    import cProfile

    # CPU time of this thread, not wall time: waiting for the upstream, and other
    # processes running meanwhile, are not the gateway's cost
    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    try:
        run()
    finally:
        profiler.disable()
        profiler.dump_stats(args.profile)
    return 0


# --- processes ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    logs: tuple[Path, ...]
    """its stdout and stderr first, then any log file of its own"""

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of its logs ('' when they are empty)."""
        tails = []
        for log in self.logs:
            try:
                text = log.read_text(errors="replace").strip()
            except OSError:
                continue
            if text:
                tails.append(f"[{log.name}]\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(tails)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL it after 5 s; always reap."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    else:  # the leader is gone; its group may not be
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


@contextmanager
def started(name: str, cmd: Sequence[str], port: int, logs: tuple[Path, ...]) -> Iterator[Server]:
    """Run ``cmd`` in its own process group until the block ends; wait for ``port``.

    Its stdout and stderr go to ``logs[0]``.
    """
    with open(logs[0], "wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(name, port, proc, logs)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise BenchError(
                    f"{name} exited with status {proc.returncode} at start:\n{server.log_tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"{name} did not listen on 127.0.0.1:{port} within {START_TIMEOUT:g} s:"
                        f"\n{server.log_tail()}"
                    ) from None
                time.sleep(0.05)
        yield server
    finally:
        stop(proc)


# --- nginx --------------------------------------------------------------------

_NGINX_COMMON = """\
worker_processes 1;
daemon off;
pid {prefix}/{name}.pid;
error_log {prefix}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/{name}-body;
    proxy_temp_path {prefix}/{name}-proxy;
    fastcgi_temp_path {prefix}/{name}-fastcgi;
    uwsgi_temp_path {prefix}/{name}-uwsgi;
    scgi_temp_path {prefix}/{name}-scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
{body}
}}
"""

_UPSTREAM_BODY = """\
    server {{
        listen 127.0.0.1:{port};
        default_type text/plain;
        location / {{ return 200 "ok\\n"; }}
    }}"""

_SPLIT_BODY = """\
    split_clients "${{http_x_user_id}}" $variant {{
        10% canary;
        *   stable;
    }}
    map $variant $version {{ canary v2; default v1; }}
    upstream stable {{ server 127.0.0.1:{upstream}; keepalive 128; }}
    upstream canary {{ server 127.0.0.1:{upstream}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
        location /{function}/ {{
            rewrite ^/{function}(/.*)$ /$version$1 break;
            proxy_pass http://$variant;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            add_header x-variant $variant always;
        }}
    }}"""


def nginx_config(prefix: Path, name: str, body: str) -> Path:
    path = prefix / f"{name}.conf"
    path.write_text(_NGINX_COMMON.format(prefix=prefix, name=name, body=body))
    return path


# --- tools ----------------------------------------------------------------------


def find_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        candidate = os.path.join(folder, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def tools() -> tuple[str, str]:
    """nginx and wrk, installed by bench/install-tools.sh first when one is missing."""
    nginx, wrk = find_tool("nginx"), find_tool("wrk")
    if nginx and wrk:
        return nginx, wrk
    missing = " and ".join(n for n, p in (("nginx", nginx), ("wrk", wrk)) if not p)
    print(f"{missing} missing: running {INSTALL_SCRIPT.name}", file=sys.stderr)
    proc = subprocess.run(["bash", str(INSTALL_SCRIPT)], stdout=sys.stderr, check=False)
    nginx, wrk = find_tool("nginx"), find_tool("wrk")
    if proc.returncode != 0 or not nginx or not wrk:
        raise SystemExit(
            f"error: {missing} missing and bench/install-tools.sh could not install them"
            f" (exit {proc.returncode}); see its message above"
        )
    return nginx, wrk


NGINX_VERSION, WRK_VERSION = r"nginx/(\S+)", r"wrk (?:debian/)?(\S+)"


def tool_version(cmd: Sequence[str], pattern: str) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    found = re.search(pattern, proc.stdout + proc.stderr)
    return found.group(1) if found else "?"


# --- CPU accounting ---------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def _on_cpu_seconds(pid: int) -> float:
    """CPU time of all threads of ``pid``: exact nanoseconds from schedstat where there is one.

    /proc/PID/stat's utime and stime are sampled at the clock tick, which
    misses much of a process that runs in bursts shorter than a tick.
    """
    total_ns, found = 0, False
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tasks = []
    for tid in tasks:
        try:
            total_ns += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
            found = True
        except (OSError, ValueError, IndexError):
            continue
    if found:
        return total_ns / 1e9
    fields = _stat_fields(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds of ``pid`` and its children (nginx: master and workers), or None."""
    if _stat_fields(pid) is None:
        return None
    total = _on_cpu_seconds(pid)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != pid:
            child = _stat_fields(int(entry.name))
            if child is not None and child[1] == str(pid):
                total += _on_cpu_seconds(int(entry.name))
    return total


def machine_busy_seconds() -> float | None:
    """CPU seconds the whole machine has been busy (all CPUs), from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in first[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass
class LoadMeter:
    """How many CPUs other processes kept busy while the benchmark ran (noise indicator)."""

    pids: Sequence[int]
    started: float = 0.0
    machine: float | None = None
    ours: float = 0.0

    def _ours(self) -> float:
        total = 0.0
        for pid in self.pids:
            total += cpu_seconds(pid) or 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):  # this script, wrk
            usage = resource.getrusage(who)
            total += usage.ru_utime + usage.ru_stime
        return total

    def start(self) -> None:
        self.started, self.machine, self.ours = (
            time.monotonic(),
            machine_busy_seconds(),
            self._ours(),
        )

    def background_cpus(self) -> float | None:
        machine = machine_busy_seconds()
        if machine is None or self.machine is None:
            return None
        others = (machine - self.machine) - (self._ours() - self.ours)
        return max(0.0, others / (time.monotonic() - self.started))


# --- checking the routing ----------------------------------------------------------


def fetch(
    conn: http.client.HTTPConnection, path: str, user: str | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn.request("GET", path, headers={"x-user-id": user} if user is not None else {})
    resp = conn.getresponse()
    return resp.status, resp.headers, resp.read()


def check_routing(
    direct: Server, nginx: Server, gateway: Server, snapshot: RoutingSnapshot
) -> None:
    """Raise `BenchError` unless each target answers, and routes users, as it should."""
    users = [f"user-{i}" for i in range(0, USERS, USERS // CHECK_USERS)]
    conns = [
        http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        for s in (direct, nginx, gateway)
    ]
    to_direct, to_nginx, to_gateway = conns
    variants = {"canary": 0, "stable": 0}
    channels = {str(Channel.CANARY): 0, str(Channel.STABLE): 0}
    try:
        for path in ("/v1/", "/v2/"):
            status, _, body = fetch(to_direct, path)
            if status != 200 or body != b"ok\n":
                raise BenchError(f"the upstream answered {status} {body!r} to {path}")
        for user in users:
            status, headers, body = fetch(to_nginx, f"/{FUNCTION}/", user)
            variant = headers.get("x-variant", "")
            if status != 200 or body != b"ok\n" or variant not in variants:
                raise BenchError(
                    f"nginx split_clients answered {status} {body!r} (x-variant {variant!r})"
                    f" for {user}"
                )
            variants[variant] += 1

            status, headers, body = fetch(to_gateway, f"/{FUNCTION}/", user)
            if status != 200 or body != b"ok\n":
                raise BenchError(f"the gateway answered {status} {body!r} for {user}")
            expected = decide(snapshot.state, user)
            want = (str(expected.channel), expected.versions[FUNCTION])
            got = (headers.get("x-coalmine-channel"), headers.get("x-coalmine-version"))
            if got != want:
                raise BenchError(
                    f"the gateway routed {user} to {got}; coalmine.core.decide says {want}"
                )
            channels[want[0]] += 1
    except (OSError, http.client.HTTPException) as exc:
        raise BenchError(f"checking the routing failed: {type(exc).__name__}: {exc}") from None
    finally:
        for conn in conns:
            conn.close()
    if 0 in variants.values() or 0 in channels.values():
        raise BenchError(
            f"{len(users)} users should land in both channels: nginx {variants}, gateway {channels}"
        )


# --- wrk ------------------------------------------------------------------------------

_LUA = """\
-- bench/gateway.py: each request carries a random user of a fixed pool in x-user-id
local users, pace, head = {users}, 0, nil
math.randomseed(12345)

function init(args)
  users = tonumber(args[1]) or users
  pace = tonumber(args[2]) or 0
  head = wrk.method .. " " .. wrk.path .. " HTTP/1.1\\r\\nHost: " .. wrk.headers["Host"]
    .. "\\r\\nx-user-id: user-"
end

function request()
  return head .. math.random(0, users - 1) .. "\\r\\n\\r\\n"
end
"""

_LUA_DELAY = """
-- before each request a connection waits a random time, exponential with a mean of
-- `pace` ms (whole ms for wrk): requests come spread out, as from independent users,
-- not in step (4 connections in step would queue behind each other at every round)
function delay()
  return math.floor(-math.log(1 - math.random()) * pace + 0.5)
end
"""

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_REQUESTS = re.compile(r"^\s*(\d+) requests in ", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    timeouts: int
    cpu_us: float | None = None
    """CPU time of the target's processes per request (user + system), when known"""


def parse_wrk(output: str) -> WrkResult:
    """Requests per second, p50 and p99 (ms) from ``wrk --latency`` output."""
    percentiles = {
        float(p): float(value) * _UNITS_MS[unit] for p, value, unit in _PERCENTILE.findall(output)
    }
    rps, requests = _RPS.search(output), _REQUESTS.search(output)
    if rps is None or requests is None or 50.0 not in percentiles or 99.0 not in percentiles:
        raise BenchError(f"could not read wrk's output:\n{output}")
    non_2xx = _NON_2XX.search(output)
    if non_2xx is not None and int(non_2xx.group(1)) > 0:
        raise BenchError(f"{non_2xx.group(1)} non-2xx answers:\n{output}")
    timeouts = 0
    errors = _SOCKET_ERRORS.search(output)
    if errors is not None:
        connect, read, write, timeouts = (int(g) for g in errors.groups())
        if connect or read or write:
            raise BenchError(f"socket errors under load:\n{output}")
    return WrkResult(
        rps=float(rps.group(1)),
        p50_ms=percentiles[50.0],
        p99_ms=percentiles[99.0],
        requests=int(requests.group(1)),
        timeouts=timeouts,
    )


@dataclass(frozen=True)
class Wrk:
    binary: str
    script: Path
    paced_script: Path

    def run(
        self,
        url: str,
        *,
        connections: int,
        seconds: int,
        pace_ms: int = 0,
        server: Server | None = None,
    ) -> WrkResult:
        """One wrk run against ``url``; with ``server``, also its CPU time per request."""
        script = self.paced_script if pace_ms > 0 else self.script
        cmd = [
            self.binary,
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
            "--",
            str(USERS),
            str(pace_ms),
        ]
        cpu_before = cpu_seconds(server.proc.pid) if server is not None else None
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=seconds + 30, check=False
            )
        except subprocess.TimeoutExpired:
            raise BenchError(f"wrk did not finish: {' '.join(cmd)}") from None
        cpu_after = cpu_seconds(server.proc.pid) if server is not None else None
        if proc.returncode != 0:
            raise BenchError(f"wrk failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
        result = parse_wrk(proc.stdout)
        if cpu_before is None or cpu_after is None or not result.requests:
            return result
        cpu_us = (cpu_after - cpu_before) * 1e6 / result.requests
        return dataclasses.replace(result, cpu_us=cpu_us)


def write_scripts(folder: Path) -> tuple[Path, Path]:
    plain, paced = folder / "users.lua", folder / "users-paced.lua"
    text = _LUA.format(users=USERS)
    plain.write_text(text)
    paced.write_text(text + _LUA_DELAY)
    return plain, paced


# --- reporting ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    name: str
    throughput: WrkResult
    latency: WrkResult
    rounds: tuple[tuple[WrkResult, WrkResult], ...] = ()
    """each round's (throughput, latency) runs; the two above are their medians"""


def median_of(results: Sequence[WrkResult]) -> WrkResult:
    """The median of each figure over ``results`` (requests and timeouts summed)."""
    cpus = [r.cpu_us for r in results if r.cpu_us is not None]
    return WrkResult(
        rps=statistics.median(r.rps for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        requests=sum(r.requests for r in results),
        timeouts=sum(r.timeouts for r in results),
        cpu_us=statistics.median(cpus) if cpus else None,
    )


def _ms(value: float) -> str:
    return f"{value:.3f}"


def print_table(rows: Sequence[Row], direct: Row, nginx: Row) -> None:
    header = (
        "target",
        "rps",
        "p50 ms",
        "p99 ms",
        "added p50",
        "added p99",
        "x nginx rps",
        "CPU us/req",
    )
    lines = [header]
    for row in rows:
        is_direct = row is direct
        cpu = row.throughput.cpu_us
        lines.append(
            (
                row.name,
                f"{row.throughput.rps:,.0f}",
                _ms(row.latency.p50_ms),
                _ms(row.latency.p99_ms),
                "-" if is_direct else _ms(row.latency.p50_ms - direct.latency.p50_ms),
                "-" if is_direct else _ms(row.latency.p99_ms - direct.latency.p99_ms),
                f"{row.throughput.rps / nginx.throughput.rps:.2f}x",
                "-" if cpu is None else f"{cpu:,.0f}",
            )
        )
    print_aligned(lines)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def report(
    args: argparse.Namespace, rows: Sequence[Row], versions: str, background: float | None
) -> None:
    """The table and the goals (unless --json-only), then the JSON line."""
    direct, nginx, coalmine = rows
    coalmine_added_p99 = coalmine.latency.p99_ms - direct.latency.p99_ms
    nginx_added_p99 = nginx.latency.p99_ms - direct.latency.p99_ms
    vs_nginx = coalmine.throughput.rps / nginx.throughput.rps
    paired = list(zip(direct.rounds, nginx.rounds, coalmine.rounds, strict=True))
    round_vs_nginx = [c[0].rps / n[0].rps for _, n, c in paired]
    round_added_p99 = [c[1].p99_ms - d[1].p99_ms for d, _, c in paired]
    if not args.json_only:
        print(f"gateway cost on loopback, 1 worker each | {versions}")
        print(
            f"rps: wrk -t1 -c{args.connections} -d{args.duration}s after a {args.warmup} s warm-up;"
            f" p50/p99: wrk -t1 -c{args.latency_connections} -d{args.duration}s, each connection"
            f" waiting {args.pace_ms} ms on average before each request; {USERS:,} users,"
            " random per request;"
            f" gateway {'without' if args.no_keyring else 'with'} a signing keyring;"
            " CPU: the target's own processes during the rps run"
        )
        print()
        print_table(rows, direct, nginx)
        print()
        print(
            "requests/s in the latency runs: "
            + ", ".join(f"{r.name} {r.latency.rps:,.0f}" for r in rows)
        )
        if len(paired) > 1:
            print(
                f"each of the {len(paired)} rounds: gateway x nginx rps "
                + ", ".join(f"{v:.2f}x" for v in round_vs_nginx)
                + "; gateway added p99 "
                + ", ".join(f"{v:.3f}" for v in round_added_p99)
                + " ms (the table gives the medians)"
            )
        if background is not None:
            busy = background >= BUSY_CPUS
            print(
                f"other processes kept {background:.2f} of {os.cpu_count()} CPUs busy during the"
                f" runs{': the numbers are disturbed, run again on a quiet machine' if busy else ''}"
            )
        timeouts = sum(r.throughput.timeouts + r.latency.timeouts for r in rows)
        if timeouts:
            print(f"wrk timeouts (requests over 2 s): {timeouts}")
        if args.profile_gateway:
            print(f"the gateway ran under cProfile (slower): stats in {args.profile_gateway}")
        goals = [
            (
                f"gateway adds under {GOAL_ADDED_P99_MS:g} ms at p99 at moderate load",
                f"{coalmine_added_p99:.3f} ms",
                coalmine_added_p99 < GOAL_ADDED_P99_MS,
            ),
            (
                f"gateway reaches at least {GOAL_VS_NGINX:g}x nginx split_clients' rps",
                f"{vs_nginx:.2f}x",
                vs_nginx >= GOAL_VS_NGINX,
            ),
        ]
        for text, value, ok in goals:
            print(f"goal: {text}: {value}  {'PASS' if ok else 'MISS'}")
    print(
        json.dumps(
            {
                "bench": "gateway",
                "direct_rps": round(direct.throughput.rps, 1),
                "coalmine_rps": round(coalmine.throughput.rps, 1),
                "nginx_rps": round(nginx.throughput.rps, 1),
                "coalmine_added_p99_ms": round(coalmine_added_p99, 3),
                "nginx_added_p99_ms": round(nginx_added_p99, 3),
                "coalmine_added_p50_ms": round(coalmine.latency.p50_ms - direct.latency.p50_ms, 3),
                "nginx_added_p50_ms": round(nginx.latency.p50_ms - direct.latency.p50_ms, 3),
                "direct_p50_ms": round(direct.latency.p50_ms, 3),
                "direct_p99_ms": round(direct.latency.p99_ms, 3),
                "coalmine_vs_nginx_rps": round(vs_nginx, 3),
                "direct_cpu_us_per_req": _round(direct.throughput.cpu_us, 1),
                "nginx_cpu_us_per_req": _round(nginx.throughput.cpu_us, 1),
                "coalmine_cpu_us_per_req": _round(coalmine.throughput.cpu_us, 1),
                "rounds": args.rounds,
                "coalmine_vs_nginx_rps_rounds": [round(v, 3) for v in round_vs_nginx],
                "coalmine_added_p99_ms_rounds": [round(v, 3) for v in round_added_p99],
                "duration_s": args.duration,
                "connections": args.connections,
                "latency_connections": args.latency_connections,
                "pace_ms": args.pace_ms,
                "keyring": not args.no_keyring,
                "background_cpus": _round(background, 2),
            }
        )
    )


# --- main ----------------------------------------------------------------------------------


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


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop servers


def free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


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
        wrk = Wrk(wrk_bin, *write_scripts(tmp))
        up_port, split_port, gw_port = free_ports(3)
        upstream_url = f"http://127.0.0.1:{up_port}"

        def nginx(name: str, title: str, port: int, body: str) -> Server:
            conf = nginx_config(tmp, name, body)
            cmd = [nginx_bin, "-p", f"{tmp}/", "-c", str(conf), "-e", f"{tmp}/{name}-error.log"]
            logs = (tmp / f"{name}.out", tmp / f"{name}-error.log")
            return stack.enter_context(started(title, cmd, port, logs))

        direct = nginx("upstream", "upstream nginx", up_port, _UPSTREAM_BODY.format(port=up_port))
        split = nginx(
            "split",
            "nginx split_clients",
            split_port,
            _SPLIT_BODY.format(port=split_port, upstream=up_port, function=FUNCTION),
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
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return run(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
