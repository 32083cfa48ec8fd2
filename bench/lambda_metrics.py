"""What per-version metrics add to an invocation inside a Lambda: the decorated handler in
Lambda mode (`LambdaFlusher`, EMF lines) next to the plain handler without coalmine.

A real control plane (``coalmine serve --no-controller``, its own process, a
fresh SQLite file) receives the flushes on 127.0.0.1. The bench sets the
Lambda environment (``AWS_LAMBDA_FUNCTION_NAME`` / ``_VERSION``) so the SDK
picks Lambda mode by itself, and calls the handlers as a Lambda runtime
would, one invocation at a time, in bursts with pauses (the freeze/thaw
pattern: a flush started at the end of a burst runs in the pause, or
finishes at the next burst). Each invocation is timed around the handler
call. Rows:

* **plain**: the handler alone (the peer);
* **sdk, metrics off**: ``@client.handler`` deciding the user's channel, no metrics;
* **lambda metrics**: the same with metrics in Lambda mode, EMF off; its
  invocations split into *typical* ones and the *flushing* ones (those whose
  end started a background flush);
* **lambda metrics + EMF**: the same with EMF lines written (to a file, as
  the Lambda runtime's log capture takes stdout).

Then the EMF choice: the cost per call of one line per invocation against one
aggregated line per 100 calls (value arrays).

    .venv/bin/python bench/lambda_metrics.py [--calls 4000] [--burst 50] [--pause 0.02]

Last line, JSON: ``{"bench": "lambda_metrics", "plain_p50_us", "plain_p99_us",
"added_p50_us", "added_p99_us", "flush_added_p99_us", "emf_added_p99_us",
"flushes", "windows_stored", "emf_line_us", "emf_aggregated_us", ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

from _procs import free_port, started
from _table import print_aligned
from coalmine.controller.schemas import AppSpec
from coalmine.metrics.emf import EmfWriter
from coalmine.metrics.lambda_flush import LambdaFlusher
from coalmine.sdk import Client

APP = "shop"
SPEC = {
    "app": APP,
    "functions": {
        "api": {
            "versions": {"v1": "arn:aws:lambda:us-east-1:123456789012:function:shop-api:1"},
            "current": "v1",
        }
    },
}
Handler = Callable[[dict[str, Any], object], Any]


def prepare(db: str) -> str:
    """Migrate and seed the store; an sdk key of the app."""
    from coalmine.web import create_app

    app = create_app(database_url=db)
    app.state.tokens.create("bench-admin", "admin")
    app.state.plane.catalog.apply(AppSpec.model_validate(SPEC), "bench")
    token: str = app.state.tokens.create("bench-sdk", "sdk", APP).token
    return token


def plain(event: dict[str, Any], context: object) -> dict[str, Any]:
    return {"statusCode": 200, "body": event["headers"]["x-user-id"]}


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def run(
    handler: Handler, calls: int, burst: int, pause: float, flusher: LambdaFlusher | None
) -> tuple[list[float], list[float]]:
    """Durations (s) of the typical invocations and of the flushing ones."""
    typical: list[float] = []
    flushing: list[float] = []
    for i in range(calls):
        before = flusher.flushes_started if flusher is not None else 0
        event = {"headers": {"x-user-id": f"user-{i % 1000}"}}
        t = time.perf_counter()
        handler(event, None)
        took = time.perf_counter() - t
        flushed = flusher is not None and flusher.flushes_started > before
        (flushing if flushed else typical).append(took)
        if (i + 1) % burst == 0:
            time.sleep(pause)  # the environment waits (frozen) for the next burst
    return typical, flushing


def emf_choice(n: int = 20_000) -> tuple[float, float]:
    """µs per call: one EMF line per invocation vs one aggregated line per 100 calls."""
    with tempfile.TemporaryFile("w") as out:
        w = EmfWriter(stream=out)
        t = time.perf_counter()
        for i in range(n):
            w.add(APP, "api", "v1", "stable", 12.5 + i % 7)
            w.flush()
        per_call = (time.perf_counter() - t) / n * 1e6
        t = time.perf_counter()
        for i in range(n):
            w.add(APP, "api", "v1", "stable", 12.5 + i % 7)  # writes at 100 values
        w.flush()
        aggregated = (time.perf_counter() - t) / n * 1e6
    return per_call, aggregated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--pause", type=float, default=0.02, help="seconds between bursts")
    parser.add_argument("--interval", type=float, default=0.1, help="Lambda flush interval")
    args = parser.parse_args()
    os.environ.update(
        AWS_LAMBDA_FUNCTION_NAME="shop-api", AWS_LAMBDA_FUNCTION_VERSION="1", AWS_REGION="us-east-1"
    )
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{tmp}/bench.db"
        sdk_key = prepare(db)
        port = free_port()
        cmd = [sys.executable, "-m", "coalmine.cli", "serve", "--port", str(port)]
        cmd += ["--database-url", db, "--no-controller", "--log-level", "warning"]
        logs = (Path(tmp) / "serve.log",)
        with started("coalmine serve", cmd, port, logs):
            url = f"http://127.0.0.1:{port}"
            rows: dict[str, tuple[list[float], list[float]]] = {}
            rows["plain"] = run(plain, args.calls, args.burst, args.pause, None)
            with Client(url, sdk_key, apps=[APP], metrics=False) as c:
                rows["sdk, metrics off"] = run(
                    c.handler(APP, user="x-user-id")(plain),
                    args.calls,
                    args.burst,
                    args.pause,
                    None,
                )
            flushes = 0
            for name, emf in (("lambda metrics", "0"), ("lambda metrics + EMF", "1")):
                os.environ["COALMINE_EMF"] = emf
                with (
                    Client(url, sdk_key, apps=[APP], lambda_flush_interval=args.interval) as c,
                    open(Path(tmp) / "stdout.log", "w") as log,
                    redirect_stdout(log),
                ):
                    assert isinstance(c.flusher, LambdaFlusher)
                    h = c.handler(APP, user="x-user-id", function="api")(plain)
                    run(h, 200, args.burst, 0, c.flusher)  # warm up
                    rows[name] = run(h, args.calls, args.burst, args.pause, c.flusher)
                    flushes += c.flusher.flushes_started
                    c.flusher.wait_idle(5)
                    failed = c.flusher.stats.failed
        con = sqlite3.connect(f"{tmp}/bench.db")
        stored = con.execute("SELECT COALESCE(SUM(requests), 0) FROM metric_windows").fetchone()[0]
        con.close()
    emf_line, emf_aggregated = emf_choice()
    us = 1e6
    p50 = {k: percentile(t + f, 0.5) * us for k, (t, f) in rows.items()}
    p99 = {k: percentile(t + f, 0.99) * us for k, (t, f) in rows.items()}
    base50, base99 = p50["plain"], p99["plain"]
    lines = [["row", "calls", "p50 µs", "p99 µs", "added p50 µs", "added p99 µs"]]
    for name, (typ, fl) in rows.items():
        lines.append(
            [
                name,
                str(len(typ) + len(fl)),
                f"{p50[name]:.1f}",
                f"{p99[name]:.1f}",
                f"{p50[name] - base50:.1f}",
                f"{p99[name] - base99:.1f}",
            ]
        )
        if fl:
            for what, part in (("  typical", typ), ("  flushing", fl)):
                a, b = percentile(part, 0.5) * us, percentile(part, 0.99) * us
                lines.append(
                    [what, str(len(part)), f"{a:.1f}", f"{b:.1f}", f"{a - base50:.1f}", f"{b - base99:.1f}"]
                )  # fmt: skip
    print_aligned(lines)
    print(
        f"flushes started: {flushes} (failed {failed}); requests stored by the control plane:"
        f" {stored} of {2 * (args.calls + 200)}"
    )
    print(
        f"EMF: one line per invocation {emf_line:.1f} µs per call;"
        f" aggregated (100 values per line) {emf_aggregated:.1f} µs per call"
    )
    typ, fl = rows["lambda metrics"]
    result = {
        "bench": "lambda_metrics",
        "calls": args.calls,
        "plain_p50_us": round(base50, 2),
        "plain_p99_us": round(base99, 2),
        "sdk_added_p99_us": round(p99["sdk, metrics off"] - base99, 2),
        "added_p50_us": round(p50["lambda metrics"] - base50, 2),
        "added_p99_us": round(p99["lambda metrics"] - base99, 2),
        "typical_added_p99_us": round(percentile(typ, 0.99) * us - base99, 2),
        "flush_added_p99_us": round(percentile(fl, 0.99) * us - base99, 2) if fl else None,
        "flush_added_max_us": round(max(fl) * us - base99, 2) if fl else None,
        "emf_added_p99_us": round(p99["lambda metrics + EMF"] - p99["lambda metrics"], 2),
        "flushes": flushes,
        "requests_stored": stored,
        "requests_recorded": 2 * (args.calls + 200),
        "emf_line_us": round(emf_line, 2),
        "emf_aggregated_us": round(emf_aggregated, 2),
        "mean_plain_us": round(statistics.fmean(rows["plain"][0]) * us, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
