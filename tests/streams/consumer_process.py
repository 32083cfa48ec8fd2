"""A notify-user consumer process, for test_consumer_groups.

    python -m tests.streams.consumer_process URL TOPIC GROUP NAME

Prints ``ready``, then one JSON line per record handled
(``{"order_id", "version", "consumer"}``) or failed (``{"failure": ...}``),
and exits once it has seen records and then none for a second and a half
(or after 30 seconds).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from coalmine.integrations import open_stream
from coalmine.sdk.dispatch import consume_and_dispatch
from tests.streams import food
from tests.streams.food import APP, CONSUMER, NOTIFY_USER

IDLE = 1.5


def main(url: str, topic: str, group: str, name: str) -> int:
    stream: Any = open_stream(url)
    router = food.router(3000)

    def handler(version: str) -> Any:
        def handle(event: dict[str, Any]) -> Any:
            out = NOTIFY_USER[version](event)
            line = {"order_id": event["order_id"], "version": version, "consumer": name}
            print(json.dumps(line), flush=True)
            return out

        return handle

    handlers = {v: handler(v) for v in NOTIFY_USER}
    print("ready", flush=True)
    started = last = time.monotonic()
    seen = False
    try:
        while time.monotonic() - started < 30:
            result = consume_and_dispatch(
                stream,
                topic,
                group,
                name,
                handlers,
                app=APP,
                function=CONSUMER,
                router=router,
                max_records=5,
                timeout=0.3,
            )
            for o in result.failures:
                print(json.dumps({"failure": o.error, "consumer": name}), flush=True)
            now = time.monotonic()
            if result.outcomes:
                seen, last = True, now
            elif seen and now - last > IDLE:
                break
    finally:
        stream.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
