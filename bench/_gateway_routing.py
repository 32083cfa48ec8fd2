"""The routing bench/gateway.py measures, and the check that each proxy routes by it.

App ``bench``: function ``fn`` v1 -> v2 in a RUNNING user-mode release at
10% (`bench_snapshot`), users identified by ``x-user-id`` from a pool of
`USERS`. `check_routing` sends `CHECK_USERS` users through each proxy before
timing and raises `BenchError` unless every answer is right and the
gateway's channel and version are what `coalmine.core.decide` says.
"""

from __future__ import annotations

import dataclasses
import http.client
import json

from _errors import BenchError
from _procs import Server
from coalmine.core import Channel, Phase, Release, RouteMode, RoutingState, decide, parse_strategy
from coalmine.core.snapshot import RoutingSnapshot

__all__ = [
    "APP",
    "BENCH_KEY",
    "CHECK_USERS",
    "EXPOSURE",
    "FUNCTION",
    "RELEASE_ID",
    "SALT",
    "USERS",
    "bench_snapshot",
    "check_lambda",
    "check_routing",
    "fetch",
]

APP, FUNCTION, RELEASE_ID = "bench", "fn", "r-bench"
SALT = "bench-gateway-salt-01"
EXPOSURE = 1000
"""basis points of 10000: a 10% rollout, as nginx's ``10% canary``"""
BENCH_KEY = b"bench-gateway-signing-key-0123456789"
USERS = 100_000
"""the pool the wrk script draws ``x-user-id`` from: ``user-0`` ... ``user-99999``"""
CHECK_USERS = 300
"""users sent through each proxy before timing, to check the routing"""


def bench_snapshot(upstream: str, *, lambda_targets: bool = False) -> RoutingSnapshot:
    """App ``bench``: ``fn`` v1 -> v2 in a RUNNING user-mode release at 10%.

    The versions' targets are ``{upstream}/v1`` and ``/v2``, or with
    ``lambda_targets`` the Lambda versions ``lambda:fn:1`` and ``lambda:fn:2``.
    """
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
    if lambda_targets:
        targets = {FUNCTION: {"v1": f"lambda:{FUNCTION}:1", "v2": f"lambda:{FUNCTION}:2"}}
    return RoutingSnapshot(state, 1, targets)


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


def check_lambda(invoke: Server, gateway: Server) -> None:
    """Raise `BenchError` unless the Invoke endpoint answers and the gateway invokes through it:
    each user's answer is the function's, on the version `coalmine.core.decide` says."""
    snapshot = bench_snapshot("", lambda_targets=True)
    users = [f"user-{i}" for i in range(0, USERS, USERS // CHECK_USERS)]
    to_invoke = http.client.HTTPConnection("127.0.0.1", invoke.port, timeout=10)
    to_gateway = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        path = f"/2015-03-31/functions/{FUNCTION}/invocations?Qualifier=1"
        status, _, body = fetch(to_invoke, path)
        if status != 200 or json.loads(body).get("body") != "ok\n":
            raise BenchError(f"the Lambda Invoke endpoint answered {status} {body!r}")
        for user in users:
            status, headers, body = fetch(to_gateway, f"/{FUNCTION}/", user)
            if status != 200 or body != b"ok\n":
                raise BenchError(f"the gateway (Lambda) answered {status} {body!r} for {user}")
            want = decide(snapshot.state, user).versions[FUNCTION]
            if headers.get("x-coalmine-version") != want:
                raise BenchError(
                    f"the gateway (Lambda) ran {headers.get('x-coalmine-version')} for {user};"
                    f" coalmine.core.decide says {want}"
                )
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise BenchError(
            f"checking the Lambda routing failed: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        to_invoke.close()
        to_gateway.close()
