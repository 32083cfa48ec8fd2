"""What in-function routing adds to a Lambda invocation, next to the plain handler.

Rows, each the same trivial HTTP API handler called in one process (no
network unless said), N invocations per row, timed one by one with
``time.perf_counter_ns``; p50 and p99 in microseconds and the p99 added over
the plain handler:

* ``plain handler``: the handler alone (the peer);
* ``route_lambda, warm``: decorated with `coalmine.sdk.route_lambda`, the
  snapshot fresh (``max_age`` not reached), a stable user (runs here): the
  typical invocation;
* ``route_lambda, refresh 304``: ``max_age=0``, so every invocation refreshes
  first with a conditional GET to the real control plane on 127.0.0.1,
  answered 304 (what one invocation per ``max_age`` pays);
* ``refresh 200``: one refresh that downloads the snapshot (a change, or a
  cold start), over a kept-alive connection.

The control plane is the real FastAPI app under uvicorn in a separate
process (this script run with ``--serve-plane``), over SQLite in a temporary
directory, so the refresh rows time the round trip, not an interpreter shared
with the server. Usage: ``python bench/lambda_sdk.py [--n 3000]``; prints
the table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import uvicorn

from _table import print_aligned
from coalmine.controller.schemas import AppSpec, ReleaseCreate
from coalmine.core.bucketing import bucket
from coalmine.core.machine import Tick
from coalmine.sdk import Client, InvocationSync, route_lambda
from coalmine.web import create_app

APP = "shop"
ARN = "arn:aws:lambda:us-east-1:123456789012:function:api"
SPEC = {
    "app": APP,
    "functions": {"api": {"versions": {"v1": f"{ARN}:1", "v2": f"{ARN}:2"}, "current": "v1"}},
    "release": {"strategy": "20%:1h, 100%"},
}


def _serve_plane(db: str) -> int:
    """The control-plane process: set up the app and a running release, print the URL
    and the SDK key, serve until stopped."""
    app = create_app(database_url=f"sqlite:///{db}")
    plane, tokens = app.state.plane, app.state.tokens
    if not tokens.has_admin():
        tokens.create("bench-admin", "admin")
    plane.catalog.apply(AppSpec.model_validate(SPEC), "bench")
    rel = plane.releases.start(APP, ReleaseCreate(candidate={"api": "v2"}), "bench")
    plane.releases.advance(rel.id, Tick(time.time()))
    key = tokens.create("bench-sdk", "sdk", APP).token
    salt = plane.snapshots.snapshot(APP).state.release.salt
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="on", ws="none")
    server = uvicorn.Server(config)
    ready = threading.Thread(
        target=_announce, args=(server, sock.getsockname()[1], key, salt), daemon=True
    )
    ready.start()
    server.run(sockets=[sock])
    return 0


def _announce(server: uvicorn.Server, port: int, key: str, salt: str) -> None:
    while not server.started:  # uvicorn exposes a flag, not an event
        time.sleep(0.01)
    print(json.dumps({"url": f"http://127.0.0.1:{port}", "key": key, "salt": salt}), flush=True)


def _times(fn: Callable[[], object], n: int) -> list[float]:
    for _ in range(min(200, n)):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1000.0)
    return out


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1]


def main() -> int:
    if sys.argv[1:2] == ["--serve-plane"]:
        return _serve_plane(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    args = parser.parse_args()
    n = args.n
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, __file__, "--serve-plane", str(Path(tmp) / "plane.db")]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True) as proc:
            try:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                if not line:
                    print("error: the control plane did not start", file=sys.stderr)
                    return 1
                plane = json.loads(line)
                rows = _run(plane["url"], plane["key"], n, plane["salt"])
            finally:
                proc.terminate()
                proc.wait(10)
    base = rows["plain handler"][1]
    lines = [["row", "p50 us", "p99 us", "added p99 us"]]
    for name, (p50, p99) in rows.items():
        lines.append([name, f"{p50:.1f}", f"{p99:.1f}", f"{p99 - base:+.1f}"])
    print_aligned(lines)
    print(
        json.dumps(
            {
                "bench": "lambda_sdk",
                "n": n,
                "plain_p99_us": round(base, 1),
                "warm_p99_us": round(rows["route_lambda, warm"][1], 1),
                "warm_added_p99_us": round(rows["route_lambda, warm"][1] - base, 1),
                "refresh_304_p99_us": round(rows["route_lambda, refresh 304"][1], 1),
                "refresh_200_p99_us": round(rows["refresh 200"][1], 1),
            }
        )
    )
    return 0


def _run(url: str, key: str, n: int, salt: str) -> dict[str, tuple[float, float]]:
    user = next(f"u{i}" for i in range(1000) if bucket(salt, f"u{i}") >= 2000)  # stable
    event = {"version": "2.0", "headers": {"x-user-id": user}, "body": "{}"}
    context = SimpleNamespace(function_version="1", invoked_function_arn=f"{ARN}:live")

    def plain(event: dict[str, Any], context: object) -> dict[str, Any]:
        return {"statusCode": 200, "body": "ok"}

    rows: dict[str, tuple[float, float]] = {}
    samples = _times(lambda: plain(event, context), n)
    rows["plain handler"] = (statistics.median(samples), _p(samples, 0.99))
    for name, max_age, count in (
        ("route_lambda, warm", 3600.0, n),
        ("route_lambda, refresh 304", 0.0, max(300, n // 5)),
    ):
        with Client(url, key, apps=[APP], max_age=max_age, metrics=False) as client:
            routed = route_lambda(client, APP, "api", user="x-user-id")(plain)
            assert routed(event, context)["body"] == "ok"
            samples = _times(lambda routed=routed: routed(event, context), count)  # type: ignore[misc]
            rows[name] = (statistics.median(samples), _p(samples, 0.99))
            if max_age == 0.0:
                assert client.status(APP).not_modified > 0, "the refreshes were not 304s"
    with httpx.Client() as http:

        def cold() -> None:
            sync = InvocationSync(url, key, [APP], http=http)
            assert sync.refresh(APP)

        samples = _times(cold, max(300, n // 5))
        rows["refresh 200"] = (statistics.median(samples), _p(samples, 0.99))
    return rows


if __name__ == "__main__":
    sys.exit(main())
