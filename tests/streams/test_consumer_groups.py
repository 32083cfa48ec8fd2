"""Two consumer processes share one group on a real broker and keep per-channel routing.

Every record is handled exactly once overall, and by the notify-user version
of its own chain, whichever process got it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from coalmine.integrations import open_stream
from coalmine.sdk.publish import publish
from tests.services import child_env, need
from tests.streams import food
from tests.streams.food import APP, PLACE_ORDER

ROOT = Path(__file__).resolve().parents[2]
URLS = {"nats": "nats://127.0.0.1:4222", "redis": "redis://127.0.0.1:6379/0"}
WITH_CONTEXT, BY_KEY = 90, 30


@pytest.mark.parametrize("broker", ["nats", "redis"])
def test_two_processes_share_a_group_and_each_record_runs_its_chains_version(broker: str) -> None:
    need(broker)
    url, topic, group = URLS[broker], f"orders-{uuid.uuid4().hex[:10]}", "notify-user"
    stream: Any = open_stream(url)
    children: list[subprocess.Popen[str]] = []
    try:
        # create the stream and the group before the consumers race to
        stream.consume(topic, group, "setup", max_records=1, timeout=0.01)
        for name in ("c1", "c2"):
            children.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.streams.consumer_process",
                        url,
                        topic,
                        group,
                        name,
                    ],
                    cwd=ROOT,
                    env=child_env(),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready", (
                child.stderr.read() if child.stderr else ""
            )
        router = food.router(3000)
        expected: dict[str, str] = {}
        for i in range(WITH_CONTEXT):
            expected[f"o-{i}"] = food.place_order(stream, topic, router, f"shopper-{i}", f"o-{i}")
        for i in range(WITH_CONTEXT, WITH_CONTEXT + BY_KEY):
            # a producer without coalmine's context: the consumers route by the user key
            user = f"shopper-{i}"
            version = router.decide(APP, user, None).versions["place-order"]
            event = PLACE_ORDER[version]({"id": f"o-{i}"}, user)
            publish(stream, topic, event, key=user, token=None)
            expected[f"o-{i}"] = version
        lines: list[dict[str, Any]] = []
        for child in children:
            out, err = child.communicate(timeout=60)
            assert child.returncode == 0, err
            lines += [json.loads(line) for line in out.splitlines() if line.strip()]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.communicate()
        stream.delete_topic(topic)
        stream.close()
    assert [line for line in lines if "failure" in line] == []
    handled = [line["order_id"] for line in lines]
    assert sorted(handled) == sorted(expected), "every record exactly once overall"
    wrong = [line for line in lines if line["version"] != expected[line["order_id"]]]
    assert wrong == []
    per_consumer = {
        name: sum(1 for line in lines if line["consumer"] == name) for name in ("c1", "c2")
    }
    assert all(per_consumer.values()), f"both processes took a share: {per_consumer}"
    assert {line["version"] for line in lines} == {"v1", "v2"}
