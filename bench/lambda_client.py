"""Which AWS client the gateway's Lambda target uses: measured, not guessed.

Starts ``coalmine lambda local`` (its own process) with a handler that
answers at once, then invokes it through `LambdaTarget` with each client,
``sigv4`` (SigV4 over the gateway's HTTP/1.1 pool) and ``botocore``
(``client.invoke`` in a thread pool), ``--concurrency`` calls in flight, and
prints requests per second, p50/p99 latency and this process's CPU per call,
then one JSON line. Run: ``.venv/bin/python bench/lambda_client.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _table import print_aligned
from coalmine.core.model import Channel, Decision, Reason
from coalmine.core.ports import Call, Message
from coalmine.gateway.lambda_target import Client, LambdaTarget

ROOT = Path(__file__).resolve().parents[1]
DECISION = Decision("bench", None, Channel.STABLE, {"fn": "v1"}, Reason.NO_RELEASE)


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Message) -> None:
    return None


def _call() -> Call:
    return Call(
        target="lambda:fn:1",
        function="fn",
        version="v1",
        decision=DECISION,
        method="GET",
        path="/fn/x",
        raw_rest=b"/x",
        query=b"",
        headers=[(b"x-user-id", b"u1"), (b"baggage", b"coalmine=abc")],
        receive=_receive,
        has_body=False,
    )


async def _run(client: Client, calls: int, concurrency: int) -> dict[str, float]:
    target = LambdaTarget(client=client, pool_size=concurrency)
    await target.start()
    for _ in range(50):  # warm up: a client per region, connections, the handler's module
        assert await target.invoke(_call(), _send) == 200
    latencies: list[float] = []
    left = [calls]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            t = time.perf_counter()
            status = await target.invoke(_call(), _send)
            latencies.append((time.perf_counter() - t) * 1000)
            assert status == 200, status

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await target.close()
    q = statistics.quantiles(latencies, n=100)
    return {
        "rps": calls / wall,
        "p50_ms": q[49],
        "p99_ms": q[98],
        "cpu_us_per_call": cpu / calls * 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        handlers = Path(tmp, "bench_fn.py")
        handlers.write_text("def handler(event, context):\n    return {'statusCode': 200}\n")
        config = Path(tmp, "functions.yaml")
        config.write_text("functions:\n  fn:\n    versions: {1: bench_fn:handler}\n")
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
        env["AWS_DEFAULT_REGION"] = "us-east-1"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "coalmine.cli",
                "lambda",
                "local",
                "-f",
                str(config),
                "--port",
                "0",
                "--app-dir",
                tmp,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip().split("=", 1)[1]
            os.environ.update(env, AWS_ENDPOINT_URL_LAMBDA=url)
            results: dict[str, list[dict[str, float]]] = {"sigv4": [], "botocore": []}
            for _ in range(args.rounds):
                for client in ("sigv4", "botocore"):
                    results[client].append(asyncio.run(_run(client, args.calls, args.concurrency)))
        finally:
            proc.terminate()
            proc.wait(10)
    med = {c: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for c, rs in results.items()}
    lines = [["client", "req/s", "p50 ms", "p99 ms", "CPU us/call"]]
    for c, m in med.items():
        lines.append(
            [
                c,
                f"{m['rps']:.0f}",
                f"{m['p50_ms']:.2f}",
                f"{m['p99_ms']:.2f}",
                f"{m['cpu_us_per_call']:.0f}",
            ]
        )
    print(f"medians of {args.rounds} rounds, {args.calls} calls, {args.concurrency} in flight")
    print_aligned(lines)
    print(json.dumps({"bench": "lambda_client", "concurrency": args.concurrency, **med}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
