"""The gateway process of bench/gateway.py: ``gateway.py --serve-gateway PORT UPSTREAM``.

With ``--lambda`` the versions are Lambda versions and UPSTREAM is the Lambda
Invoke endpoint, reached as boto3 would be: through ``AWS_ENDPOINT_URL_LAMBDA``
and the standard credential variables (fake ones when none are set).

It serves `bench_snapshot` under uvicorn as ``coalmine gateway`` runs it
(uvloop, the gateway's httptools protocol, access log off), optionally with
a signing keyring and under cProfile (CPU time).
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from collections.abc import Sequence

from _gateway_routing import APP, BENCH_KEY, bench_snapshot
from _procs import terminate
from coalmine.core import Keyring

__all__ = ["serve_gateway"]


def serve_gateway(argv: Sequence[str]) -> int:
    """The gateway process: ``gateway.py --serve-gateway PORT UPSTREAM [--keyring] [--profile F]``."""
    parser = argparse.ArgumentParser(prog="gateway.py --serve-gateway")
    parser.add_argument("port", type=int)
    parser.add_argument("upstream")
    parser.add_argument("--keyring", action="store_true")
    parser.add_argument("--lambda", dest="lambda_", action="store_true")
    parser.add_argument("--profile")
    args = parser.parse_args(argv)

    import uvicorn

    from coalmine.gateway import GatewayConfig, IdentityConfig, StaticSource, create_gateway
    from coalmine.gateway.server import uvicorn_options

    keyring = Keyring.single(BENCH_KEY) if args.keyring else None
    # the wrk scripts name each request's user in x-user-id (bench/_wrk.py)
    identity = IdentityConfig(user_header="x-user-id")
    config = GatewayConfig(app=APP, keyring=keyring, identity=identity)
    if args.lambda_:
        os.environ["AWS_ENDPOINT_URL_LAMBDA"] = args.upstream
        for name, value in (
            ("AWS_ACCESS_KEY_ID", "bench"),
            ("AWS_SECRET_ACCESS_KEY", "bench"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ):
            os.environ.setdefault(name, value)
    snapshot = bench_snapshot(args.upstream, lambda_targets=args.lambda_)
    gateway = create_gateway(config, StaticSource(snapshot))

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
    signal.signal(signal.SIGTERM, terminate)
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
