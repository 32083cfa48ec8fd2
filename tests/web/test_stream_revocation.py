"""A revoked key's open SSE streams end: they send ``event: revoked`` and close at once when
the key is revoked through this server, within a second when it is revoked anywhere else."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import httpx
import pytest

from coalmine.controller.tokens import TokenService
from coalmine.store.db import open_store
from coalmine.web import create_app
from tests.web.conftest import ADMIN_SECRET, APP_DOC, bearer, read_events, serve

HEARTBEAT = 1.0
Events = queue.Queue[tuple[float, str, Any] | None]


def _until(events: Events, kind: str, within: float) -> tuple[float, Any]:
    deadline = time.monotonic() + within
    while True:
        item = events.get(timeout=max(0.01, deadline - time.monotonic()))
        assert item is not None
        if item[1] == kind:
            return item[0], item[2]
        assert item[1] in ("comment", "snapshot", "discovery"), item


def _credentials(
    role: str, token: str, params: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Query and headers that carry ``token``: a browser key in ``?key=`` as an EventSource
    sends it, anything else as a bearer token."""
    if role == "browser":
        return {**params, "key": token}, {}
    return params, bearer(token)


@pytest.mark.parametrize(
    ("role", "path", "params", "first"),
    [
        ("sdk", "/v1/apps/shop/routing/stream", {}, "snapshot"),
        ("browser", "/v1/discovery/stream", {"app": "shop", "user": "u-1"}, "discovery"),
        ("viewer", "/v1/discovery/stream", {"app": "shop", "user": "u-1"}, "discovery"),
    ],
)
def test_a_revoked_keys_stream_ends_within_one_heartbeat(
    sqlite_url: str, admin_env: str, role: str, path: str, params: dict[str, str], first: str
) -> None:
    app = create_app(database_url=sqlite_url, heartbeat=HEARTBEAT)
    with serve(app) as base, httpx.Client(base_url=base, headers=bearer(ADMIN_SECRET)) as api:
        r = api.post("/v1/apply", content=APP_DOC, headers={"Content-Type": "application/yaml"})
        assert r.status_code == 200, r.text
        body = {
            "name": f"{role}-key",
            "role": role,
            **({} if role == "viewer" else {"app": "shop"}),
        }
        created = api.post("/v1/tokens", json=body).json()
        params, headers = _credentials(role, created["token"], params)
        events: Events = queue.Queue()
        client = httpx.Client(base_url=base, timeout=httpx.Timeout(10, read=30))
        with client.stream("GET", path, params=params, headers=headers) as response:
            assert response.status_code == 200
            threading.Thread(target=read_events, args=(response, events), daemon=True).start()
            _until(events, first, within=5)
            _until(events, "comment", within=5)  # a heartbeat passes: the key is still good

            revoked_at = time.monotonic()
            assert api.delete(f"/v1/tokens/{created['id']}").is_success
            at, data = _until(events, "revoked", within=5)
            assert "revoked" in data["detail"]
            ended_at, _ = _until(events, "end", within=5)
        client.close()
        assert at - revoked_at <= HEARTBEAT + 0.5, at - revoked_at
        assert ended_at - revoked_at <= HEARTBEAT + 0.5
        # and it cannot be opened again
        r = httpx.get(base + path, params=params, headers=headers)
        assert r.status_code == 401


@pytest.mark.parametrize(
    ("role", "path", "params", "first"),
    [
        ("sdk", "/v1/apps/shop/routing/stream", {}, "snapshot"),
        ("browser", "/v1/discovery/stream", {"app": "shop", "user": "u-1"}, "discovery"),
    ],
)
def test_a_key_revoked_elsewhere_ends_its_streams_and_requests_within_a_second(
    database_url: str, admin_env: str, role: str, path: str, params: dict[str, str], first: str
) -> None:
    """Revoked by another process (``coalmine token revoke`` on the store, another replica):
    no notice reaches this server; its key cache finds out by itself. The heartbeat is far
    off, so only that can end the stream."""
    app = create_app(database_url=database_url, heartbeat=60)
    with serve(app) as base, httpx.Client(base_url=base, headers=bearer(ADMIN_SECRET)) as api:
        r = api.post("/v1/apply", content=APP_DOC, headers={"Content-Type": "application/yaml"})
        assert r.status_code == 200, r.text
        created = api.post("/v1/tokens", json={"name": "k", "role": role, "app": "shop"}).json()
        params, headers = _credentials(role, created["token"], params)
        events: Events = queue.Queue()
        client = httpx.Client(base_url=base, timeout=httpx.Timeout(10, read=30))
        with client.stream("GET", path, params=params, headers=headers) as response:
            assert response.status_code == 200
            threading.Thread(target=read_events, args=(response, events), daemon=True).start()
            _until(events, first, within=5)
            r = httpx.get(base + path.removesuffix("/stream"), params=params, headers=headers)
            assert r.status_code == 200, r.text  # the key is held by the cache now

            elsewhere = open_store(database_url)
            try:
                TokenService(elsewhere).revoke(created["id"])
            finally:
                elsewhere.dispose()
            revoked_at = time.monotonic()
            at, _ = _until(events, "revoked", within=5)
            refused = None
            while refused is None:
                r = httpx.get(base + path.removesuffix("/stream"), params=params, headers=headers)
                if r.status_code == 401:
                    refused = time.monotonic()
                else:
                    assert r.status_code == 200, r.text
                    assert time.monotonic() - revoked_at < 5
        client.close()
    # the bound promised: one second, streams and requests alike
    assert at - revoked_at < 1.0, at - revoked_at
    assert refused - revoked_at < 1.0, refused - revoked_at
