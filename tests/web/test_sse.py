"""The routing stream over a real uvicorn server: snapshot at once, each change within a second."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from coalmine.core.machine import Tick
from coalmine.web import create_app
from tests.web.conftest import ADMIN_SECRET, APP_DOC, bearer, serve


@dataclass
class Message:
    at: float
    """time.monotonic() when the message was read"""
    event: str | None
    id: str | None
    data: dict[str, Any] | None
    comment: str | None


def _read(response: httpx.Response, out: queue.Queue[Message | None]) -> None:
    fields: dict[str, str] = {}
    comment = None
    try:
        for line in response.iter_lines():
            if line.startswith(":"):
                comment = line[1:].strip()
            elif line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
            else:  # a blank line ends a message
                data = json.loads(fields["data"]) if "data" in fields else None
                out.put(
                    Message(time.monotonic(), fields.get("event"), fields.get("id"), data, comment)
                )
                fields, comment = {}, None
    except (httpx.HTTPError, RuntimeError):
        pass
    finally:
        out.put(None)


@contextmanager
def stream(base: str, app: str, secret: str) -> Iterator[queue.Queue[Message | None]]:
    """Subscribe to the app's stream; messages arrive on a queue, read on a thread."""
    client = httpx.Client(base_url=base, timeout=httpx.Timeout(10, read=30))
    messages: queue.Queue[Message | None] = queue.Queue()
    with client.stream("GET", f"/v1/apps/{app}/routing/stream", headers=bearer(secret)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = threading.Thread(target=_read, args=(response, messages), daemon=True)
        reader.start()
        try:
            yield messages
        finally:
            response.close()
    client.close()
    reader.join(timeout=5)


def _next(messages: queue.Queue[Message | None], want: Callable[[Message], bool]) -> Message:
    deadline = time.monotonic() + 5
    while True:
        msg = messages.get(timeout=max(0.0, deadline - time.monotonic()))
        assert msg is not None, "the stream ended"
        if want(msg):
            return msg


def _phase(msg: Message) -> str | None:
    if msg.event != "snapshot" or msg.data is None or msg.data["release"] is None:
        return None
    phase: str = msg.data["release"]["phase"]
    return phase


def test_stream_sends_the_snapshot_then_each_change_within_a_second(
    database_url: str, admin_env: str
) -> None:
    app = create_app(database_url=database_url, heartbeat=0.3)
    cache = app.state.snapshots  # what streams subscribe to (it follows the change feed)
    service = app.state.plane
    active = 0
    unsubscribed = threading.Event()
    subscribe = cache.subscribe

    def counting_subscribe(callback: Callable[[str], None]) -> Callable[[], None]:
        nonlocal active
        active += 1
        unsubscribe = subscribe(callback)

        def counted() -> None:
            nonlocal active
            active -= 1
            unsubscribe()
            unsubscribed.set()

        return counted

    cache.subscribe = counting_subscribe

    with serve(app) as base, httpx.Client(base_url=base, headers=bearer(ADMIN_SECRET)) as api:
        r = api.post("/v1/apply", content=APP_DOC, headers={"Content-Type": "application/yaml"})
        assert r.status_code == 200, r.text
        rel = api.post("/v1/apps/shop/releases", json={"candidate": {"api": "v2"}}).json()
        service.releases.advance(rel["id"], Tick(time.time() + 1e6))  # the controller's first step
        sdk = api.post("/v1/tokens", json={"name": "lambdas", "role": "sdk", "app": "shop"})
        key = sdk.json()["token"]

        with stream(base, "shop", key) as messages:
            first = _next(messages, lambda m: m.event == "snapshot")
            assert first.data is not None
            assert first.data == service.snapshots.snapshot("shop").to_dict()
            assert first.id == str(first.data["revision"])
            assert (_phase(first), first.data["release"]["exposure"]) == ("running", 1000)
            assert active == 1

            # idle: keepalive comments at the heartbeat
            assert _next(messages, lambda m: m.comment is not None).comment == "keepalive"

            # rollback reaches the subscriber within a second
            r = api.post(f"/v1/releases/{rel['id']}/rollback", json={"reason": "p99 doubled"})
            answered = time.monotonic()
            assert r.status_code == 200
            assert r.json()["phase"] == "rolling_back"
            event = _next(messages, lambda m: _phase(m) == "rolling_back")
            latency = event.at - answered
            assert latency < 1.0, f"rollback reached the stream after {latency:.3f}s"
            assert int(event.id or 0) > int(first.id or 0)

            # a burst of changes is coalesced, and the last state always arrives
            for i in range(3, 8):
                api.post(
                    "/v1/apps/shop/functions/worker/versions",
                    json={"name": f"v{i}", "target": f"shop.worker_v{i}:handler"},
                )
            final = service.snapshots.snapshot("shop").revision
            seen = [_next(messages, lambda m: m.event == "snapshot")]
            while int(seen[-1].id or 0) < final:
                seen.append(_next(messages, lambda m: m.event == "snapshot"))
            assert len(seen) <= 5
            assert seen[-1].data is not None
            assert "v7" in seen[-1].data["targets"]["worker"]
            ids = [int(m.id or 0) for m in seen]
            assert ids == sorted(set(ids))  # never the same revision twice

        assert unsubscribed.wait(5), "the stream did not unsubscribe on disconnect"
        assert active == 0


def test_stream_refuses_unknown_apps_and_other_apps_keys(sqlite_url: str, admin_env: str) -> None:
    app = create_app(database_url=sqlite_url)
    with serve(app) as base, httpx.Client(base_url=base, headers=bearer(ADMIN_SECRET)) as api:
        r = api.get("/v1/apps/nope/routing/stream")
        assert (r.status_code, r.json()) == (404, {"detail": "no app named 'nope'"})
        assert api.post("/v1/apps", json={"name": "blog"}).status_code == 201
        assert api.post("/v1/apps", json={"name": "shop"}).status_code == 201
        key = api.post("/v1/tokens", json={"name": "k", "role": "sdk", "app": "blog"}).json()[
            "token"
        ]
        r = api.get("/v1/apps/shop/routing/stream", headers=bearer(key))
        assert r.status_code == 403
        r = api.get("/v1/apps/shop/routing/stream", headers={"Authorization": ""})
        assert r.status_code == 401


@pytest.mark.parametrize("heartbeat", [0.0, -1.0])
def test_heartbeat_must_be_positive(sqlite_url: str, heartbeat: float) -> None:
    from coalmine.store.db import open_store

    store = open_store(sqlite_url)
    try:
        with pytest.raises(ValueError, match="heartbeat"):
            create_app(store, heartbeat=heartbeat)
    finally:
        store.dispose()
