"""The gateway's own CPU per request: its ASGI app in a tight loop, the upstream stubbed out.

No sockets, no server: each request is identified, decided, its context
signed and its headers rewritten, and the stub target answers at once. Two
gateways over the same snapshot (`bench/_gateway_routing.py`'s: a 10%
release, users from ``x-user-id``): one with a signing keyring, which signs
a routing context bound to each request's user, and one without, which
signs nothing. The difference is what signing a bound context costs a
request. N distinct users, R rounds; the best round is reported.

    .venv/bin/python bench/gateway_inprocess.py            # 20,000 users x 5 rounds
    .venv/bin/python bench/gateway_inprocess.py --quick

Last line: ``{"bench": "gateway_inprocess", "signed_us": .., "unsigned_us": ..,
"signing_us": ..}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from _gateway_routing import APP, BENCH_KEY, FUNCTION, bench_snapshot
from coalmine.core.model import TargetKind
from coalmine.core.ports import Call
from coalmine.core.signing import Keyring
from coalmine.gateway.app import Gateway
from coalmine.gateway.asgi import Scope, Send
from coalmine.gateway.config import GatewayConfig
from coalmine.gateway.source import StaticSource


class Stub:
    """A target that answers 200 at once (a `FunctionTarget`)."""

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def invoke(self, call: Call, send: Send) -> int:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return 200


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Any) -> None:
    return None


def _scope(user: str) -> Scope:
    path = f"/{FUNCTION}/"
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "scheme": "http",
        "client": ("127.0.0.1", 1),
        "headers": [(b"host", b"bench"), (b"x-user-id", user.encode())],
    }


async def per_request_us(keyring: Keyring | None, users: int, rounds: int) -> float:
    """The best round's microseconds per request."""
    snapshot = bench_snapshot("http://127.0.0.1:9")
    gateway = Gateway(
        GatewayConfig(app=APP, keyring=keyring),
        StaticSource(snapshot),
        targets={TargetKind.HTTP: Stub(), TargetKind.LOCAL: Stub()},
    )
    scopes = [_scope(f"user-{i}") for i in range(users)]
    for scope in scopes[: min(users, 2000)]:  # warm-up
        await gateway(scope, _receive, _send)
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for scope in scopes:
            await gateway(scope, _receive, _send)
        best = min(best, (time.perf_counter() - started) / users * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2,000 users x 2 rounds")
    args = parser.parse_args()
    users, rounds = (2000, 2) if args.quick else (args.users, args.rounds)
    signed = asyncio.run(per_request_us(Keyring.single(BENCH_KEY), users, rounds))
    unsigned = asyncio.run(per_request_us(None, users, rounds))
    print(f"gateway, upstream stubbed: {signed:.2f} us/request signing bound contexts,")
    print(f"  {unsigned:.2f} us/request without keys: {signed - unsigned:.2f} us to sign")
    result = {
        "bench": "gateway_inprocess",
        "users": users,
        "rounds": rounds,
        "signed_us": round(signed, 2),
        "unsigned_us": round(unsigned, 2),
        "signing_us": round(signed - unsigned, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
