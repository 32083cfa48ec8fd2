"""The report of bench/gateway.py: the table, the goals with PASS or MISS, and the JSON line.

A `Row` is one target's median throughput and latency runs and each round's;
`report` prints the table and the goals (unless ``--json-only``) and last the
JSON line whose keys scripts read.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

from _gateway_routing import USERS
from _table import print_aligned
from _wrk import WrkResult

__all__ = ["BUSY_CPUS", "GOAL_ADDED_P99_MS", "GOAL_VS_NGINX", "Row", "print_table", "report"]

GOAL_ADDED_P99_MS = 1.0
GOAL_VS_NGINX = 0.2
BUSY_CPUS = 0.25
"""CPUs that other processes may keep busy before the run is called disturbed"""


@dataclass(frozen=True)
class Row:
    name: str
    throughput: WrkResult
    latency: WrkResult
    rounds: tuple[tuple[WrkResult, WrkResult], ...] = ()
    """each round's (throughput, latency) runs; the two above are their medians"""


def _ms(value: float) -> str:
    return f"{value:.3f}"


def print_table(
    rows: Sequence[Row], direct: Row, nginx: Row, bases: dict[str, Row] | None = None
) -> None:
    """``bases``: the row each named row's added latency is measured from (else ``direct``)."""
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
        base = (bases or {}).get(row.name, direct)
        is_direct = row is direct or any(row is b for b in (bases or {}).values())
        cpu = row.throughput.cpu_us
        lines.append(
            (
                row.name,
                f"{row.throughput.rps:,.0f}",
                _ms(row.latency.p50_ms),
                _ms(row.latency.p99_ms),
                "-" if is_direct else _ms(row.latency.p50_ms - base.latency.p50_ms),
                "-" if is_direct else _ms(row.latency.p99_ms - base.latency.p99_ms),
                f"{row.throughput.rps / nginx.throughput.rps:.2f}x",
                "-" if cpu is None else f"{cpu:,.0f}",
            )
        )
    print_aligned(lines)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _lambda(rows: Sequence[Row]) -> tuple[Row, Row, float] | None:
    """(the Invoke endpoint called directly, the gateway invoking it, its added p99) if run."""
    if not rows:
        return None
    invoke, gateway = rows
    return invoke, gateway, gateway.latency.p99_ms - invoke.latency.p99_ms


def report(
    args: argparse.Namespace, rows: Sequence[Row], versions: str, background: float | None
) -> None:
    """The table and the goals (unless --json-only), then the JSON line."""
    direct, nginx, coalmine = rows[:3]
    lam = _lambda(rows[3:])
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
        bases = {lam[1].name: lam[0]} if lam is not None else None
        print_table(rows, direct, nginx, bases)
        if lam is not None:
            print(
                f"{lam[1].name}: added p50/p99 are over calling the Invoke endpoint directly"
                " (the same minimal Invoke responder; the gateway also signs each call, SigV4)"
            )
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
        if lam is not None:
            goals.append(
                (
                    f"gateway adds under {GOAL_ADDED_P99_MS:g} ms at p99 to a Lambda invoke"
                    " at moderate load",
                    f"{lam[2]:.3f} ms",
                    lam[2] < GOAL_ADDED_P99_MS,
                )
            )
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
                **(
                    {
                        "lambda_direct_rps": round(lam[0].throughput.rps, 1),
                        "lambda_rps": round(lam[1].throughput.rps, 1),
                        "lambda_added_p99_ms": round(lam[2], 3),
                        "lambda_added_p50_ms": round(
                            lam[1].latency.p50_ms - lam[0].latency.p50_ms, 3
                        ),
                        "lambda_cpu_us_per_req": _round(lam[1].throughput.cpu_us, 1),
                    }
                    if lam is not None
                    else {}
                ),
            }
        )
    )
