"""Run only the rollout controller: ``python -m coalmine.controller --database-url URL``.

For operators who split the API and the controller into separate processes
(and for the multi-process tests): opens the store, elects a leader among
the controllers sharing the database, and drives releases until SIGTERM or
SIGINT. Logs go to stderr at INFO ("controller: acquired leadership", one
line per transition).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from types import FrameType

from coalmine.controller.hooks import HookDispatcher
from coalmine.controller.leader import leadership_for
from coalmine.controller.loop import Controller
from coalmine.controller.plane import ControlPlane
from coalmine.controller.webhooks import EventWebhooks
from coalmine.core.errors import InvalidInput
from coalmine.integrations.outbound import OutboundPolicy, set_policy
from coalmine.store.changes import ChangeFeed
from coalmine.store.db import database_url, open_store

__all__ = ["main"]

log = logging.getLogger("coalmine.controller")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m coalmine.controller",
        description="Run the coalmine rollout controller (steps, hooks, leader election).",
    )
    p.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy URL of the store (default: $COALMINE_DATABASE_URL, else sqlite:///coalmine.db)",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=1.0,
        help="longest sleep between ticks, and how often a standby tries to lead (seconds)",
    )
    p.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default INFO",
    )
    p.add_argument(
        "--outbound-allow",
        default=os.environ.get("COALMINE_OUTBOUND_ALLOW", "private"),
        metavar="LIST",
        help="private and loopback destinations hooks, webhooks and Prometheus alarms may"
        " reach: private (default, $COALMINE_OUTBOUND_ALLOW), none, or CIDRs and host names;"
        " link-local and metadata addresses never",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error("--interval must be > 0 seconds")
    try:
        set_policy(OutboundPolicy.parse(args.outbound_allow))
    except InvalidInput as exc:
        parser.error(f"--outbound-allow: {exc}")
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("controller: %s received; stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    url = database_url(args.database_url)
    try:
        store = open_store(url)
    except Exception as exc:
        shown = url.split("@")[-1]  # never log a password
        log.error("controller: cannot open the store %s: %s", shown, exc)
        return 1
    feed = ChangeFeed(store)
    webhooks = EventWebhooks(store)
    hooks = HookDispatcher()
    plane = ControlPlane(store, feed, sinks=[webhooks])
    controller = Controller(
        plane,
        feed=feed,
        leadership=leadership_for(store),
        hooks=hooks,
        interval=args.interval,
        actor=f"controller@{socket.gethostname()}:{os.getpid()}",
    )
    log.info(
        "controller: started (pid %d, %s database, interval %gs)",
        os.getpid(),
        store.engine.dialect.name,
        args.interval,
    )
    feed.start()
    webhooks.start()
    controller.start()
    try:
        stop.wait()
    finally:
        controller.stop()
        webhooks.stop()
        hooks.close()
        feed.stop()
        store.dispose()
        log.info("controller: stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
