"""The `SnapshotSource` contract: one suite, run against every implementation.

`StaticSource` (the in-memory one) and `SyncSource` following a control
plane (a small HTTP server on 127.0.0.1 answering the routing endpoint as
the real one does) must both pass it unchanged.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from coalmine.core.ports import ManagedSource, SnapshotSource
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.gateway import StaticSource, SyncSource
from tests.sdk import APP, make_snapshot

SNAPSHOT = make_snapshot(3)


@contextmanager
def routing_server(*snapshots: RoutingSnapshot) -> Iterator[str]:
    """``GET /v1/apps/{app}/routing`` (with ETag) from ``snapshots``; the stream answers 503."""
    by_app = {s.app: s for s in snapshots}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = self.path.split("?")[0].strip("/").split("/")
            snap = by_app.get(parts[2]) if len(parts) >= 4 else None
            if self.headers.get("authorization") != "Bearer sdk-key":
                self._answer(401, {"detail": "invalid or revoked token"})
            elif parts[-1] == "stream":
                self._answer(503, {"detail": "no streams here"})
            elif snap is None:
                self._answer(404, {"detail": "no such app"})
            elif self.headers.get("if-none-match") == snap.etag:
                self._answer(304, None, etag=snap.etag)
            else:
                self._answer(200, snap.to_dict(), etag=snap.etag)

        def _answer(self, status: int, data: Any, etag: str | None = None) -> None:
            body = b"" if data is None else json.dumps(data).encode()
            self.send_response(status)
            if etag is not None:
                self.send_header("ETag", etag)
            if data is not None:
                self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(params=["static", "sync"])
async def source(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SnapshotSource]:
    """A source holding `SNAPSHOT` for app `APP` (started when it has a lifecycle)."""
    if request.param == "static":
        yield StaticSource(SNAPSHOT)
        return
    with routing_server(SNAPSHOT) as url:
        sync = SyncSource(url, "sdk-key", APP, cache_dir=tmp_path, ready_timeout=10)
        await sync.start()
        try:
            yield sync
        finally:
            await sync.close()


def test_it_is_a_snapshot_source(source: SnapshotSource) -> None:
    assert isinstance(source, SnapshotSource)


def test_it_gives_the_apps_snapshot_as_it_was_published(source: SnapshotSource) -> None:
    got = source.snapshot(APP)
    assert got is not None
    assert (got.app, got.revision, got.etag) == (APP, SNAPSHOT.revision, SNAPSHOT.etag)
    assert got.to_dict() == SNAPSHOT.to_dict()
    assert got.state == SNAPSHOT.state


def test_an_app_it_has_no_snapshot_of_is_none(source: SnapshotSource) -> None:
    assert source.snapshot("another-app") is None


def test_reading_a_snapshot_never_waits_for_the_network(source: SnapshotSource) -> None:
    """A gateway reads it on every request: 1,000 reads take far less than a second."""
    started = time.perf_counter()
    for _ in range(1000):
        assert source.snapshot(APP) is not None
    assert time.perf_counter() - started < 1.0


async def test_a_managed_source_can_be_closed_twice(source: SnapshotSource) -> None:
    if not isinstance(source, ManagedSource):
        pytest.skip("not a managed source: it has no lifecycle")
    await source.close()
    await source.close()
