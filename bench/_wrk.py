"""wrk: the Lua scripts that give each request a random user, a run, and its parsed result.

`Wrk.run` runs ``wrk -t1 --latency`` against a URL (paced or back to back),
with the target's CPU time per request when given its server (`run_wrk` does
it with any script); `parse_wrk`
reads requests per second and p50/p99, and raises `BenchError` on non-2xx
answers or socket errors; `median_of` takes the median of each figure over
rounds.
"""

from __future__ import annotations

import dataclasses
import re
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from _cpu import cpu_seconds
from _errors import BenchError
from _procs import Server

__all__ = ["Wrk", "WrkResult", "median_of", "parse_wrk", "run_wrk", "write_scripts"]

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
    users: int
    """the pool the scripts draw ``x-user-id`` from: ``user-0`` ... ``user-{users - 1}``"""

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
        return run_wrk(
            self.binary,
            script,
            url,
            [str(self.users), str(pace_ms)],
            connections=connections,
            seconds=seconds,
            server=server,
        )[0]


def run_wrk(
    binary: str,
    script: Path,
    url: str,
    script_args: Sequence[str] = (),
    *,
    connections: int,
    seconds: int,
    server: Server | None = None,
) -> tuple[WrkResult, str]:
    """``wrk -t1 --latency`` with a Lua script: its result and its whole output (what the
    script's ``done`` printed included); with ``server``, the server's CPU time per request."""
    cmd = [
        binary,
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
        url,
        "--",
        *script_args,
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
        return result, proc.stdout
    cpu_us = (cpu_after - cpu_before) * 1e6 / result.requests
    return dataclasses.replace(result, cpu_us=cpu_us), proc.stdout


def write_scripts(folder: Path, users: int) -> tuple[Path, Path]:
    plain, paced = folder / "users.lua", folder / "users-paced.lua"
    text = _LUA.format(users=users)
    plain.write_text(text)
    paced.write_text(text + _LUA_DELAY)
    return plain, paced


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
