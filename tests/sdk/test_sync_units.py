"""RoutingSync without a control plane: ordering, the SSE parser, dead streams, the cache."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from coalmine.core.errors import InvalidInput
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.sdk import RoutingSync
from coalmine.sdk.sync import parse_sse
from coalmine.web.sse import KEEPALIVE, format_snapshot
from tests.sdk import APP, Changes, ControlPlane, MockPlane, make_snapshot, wait_until


def test_a_revision_never_goes_backwards() -> None:
    mock = MockPlane()
    mock.answers = [make_snapshot(r) for r in (5, 3, 7, 6, 7, 2)]
    changes = Changes()
    with RoutingSync(
        "http://plane", "sdk-key", stream=False, poll_interval=0.01, http=mock.http()
    ) as sync:
        sync.on_change(changes)
        sync.add(APP)
        assert mock.served.wait(5)
        wait_until(lambda: sync.status(APP).polls >= 6, what="six polls")
        held = sync.snapshot(APP)
        assert held is not None
        assert held.revision == 7
        assert [s.revision for _, _, s in changes.seen] == [5, 7]


def test_the_stream_applies_only_newer_revisions_and_skips_bad_events() -> None:
    body = (
        format_snapshot(make_snapshot(2), retry=1000)
        + KEEPALIVE
        + "event: snapshot\nid: 9\ndata: {not json\n\n"
        + format_snapshot(make_snapshot(1))
        + format_snapshot(make_snapshot(4))
    )
    calls: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path.endswith("/stream"):
            return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})
        return httpx.Response(503)

    changes = Changes()
    http = httpx.Client(transport=httpx.MockTransport(handle))
    with RoutingSync("http://plane", "k", [], http=http, backoff_max=0.2) as sync:
        sync.on_change(changes)
        sync.add(APP)
        changes.wait_for(lambda s: s.revision == 4)
        assert [s.revision for _, _, s in changes.seen] == [2, 4]  # the 1 was ignored
        held = sync.snapshot(APP)
        assert held is not None
        assert held.revision == 4
        # the stream ended: the sync polls, and reconnects
        wait_until(lambda: sync.status(APP).connects >= 2, what="a reconnect")
        assert "/v1/apps/shop/routing" in calls
        status = sync.status(APP)
        assert status.last_error is not None


def test_parse_sse_follows_the_spec() -> None:
    lines = [
        "retry: 1000",
        ": keepalive",
        "event: snapshot",
        "id: 7",
        "data: {",
        'data:"a": 1}',
        "",
        "",
        "data: plain",
        "",
        "event: ignored-without-data",
        "",
    ]
    seen: list[None] = []
    events = list(parse_sse(lines, lambda: seen.append(None)))
    assert [(e.event, e.data, e.id) for e in events] == [
        ("snapshot", '{\n"a": 1}', "7"),
        ("message", "plain", "7"),
    ]
    assert len(seen) == len(lines)


class SilentServer:
    """Answers a stream with one snapshot event, then never sends another byte (polls: 503)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self.accepted = threading.Semaphore(0)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        event = format_snapshot(make_snapshot(3)).encode()
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)
            request = conn.recv(65536)
            if b"/stream " not in request.split(b"\r\n", 1)[0]:
                conn.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\n"
                    b"content-length: 0\r\nconnection: close\r\n\r\n"
                )
                conn.close()
                continue
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
                + f"{len(event):x}\r\n".encode()
                + event
                + b"\r\n"
            )
            self.accepted.release()

    def close(self) -> None:
        self.sock.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def test_a_silent_stream_is_taken_for_dead_and_reconnected(
    silent: SilentServer, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="coalmine.sdk"),
        RoutingSync(silent.url, "k", [APP], keepalive=0.1, backoff_max=0.2) as sync,
    ):
        assert silent.accepted.acquire(timeout=5)
        assert sync.wait_ready(5)
        started = time.monotonic()
        assert silent.accepted.acquire(timeout=5)  # a second stream: reconnected
        assert time.monotonic() - started < 2
        wait_until(lambda: sync.status(APP).connects == 2, what="the second connection")
        held = sync.snapshot(APP)
        assert held is not None
        assert held.revision == 3
    assert "the stream was silent for 0.3s: presumed dead" in caplog.text


def test_close_interrupts_a_blocked_stream_at_once(silent: SilentServer) -> None:
    sync = RoutingSync(silent.url, "k", [APP], keepalive=100)
    assert sync.wait_ready(5)
    started = time.monotonic()
    sync.close()
    assert time.monotonic() - started < 1
    assert sync.status(APP).mode == "closed"
    assert sync.snapshot(APP) is not None  # still readable after close
    with pytest.raises(RuntimeError, match="closed"):
        sync.add("blog")


def test_a_failing_subscriber_does_not_stop_the_sync(caplog: pytest.LogCaptureFixture) -> None:
    mock = MockPlane(make_snapshot(1))
    changes = Changes()

    def broken(app: str, snapshot: RoutingSnapshot) -> None:
        raise RuntimeError("subscriber bug")

    with RoutingSync(
        "http://p", "sdk-key", stream=False, poll_interval=0.01, http=mock.http()
    ) as sync:
        sync.on_change(broken)
        unsubscribe = sync.on_change(changes)
        with caplog.at_level(logging.ERROR, logger="coalmine.sdk"):
            sync.add(APP)
            changes.wait_for(lambda s: s.revision == 1)
        assert "on_change callback failed" in caplog.text
        unsubscribe()
        mock.snapshots[APP] = make_snapshot(2)
        wait_until(lambda: sync.status(APP).revision == 2, what="revision 2")
        assert [s.revision for _, _, s in changes.seen] == [1]


def test_unusable_cache_files_are_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "shop.json").write_text("{not json")
    (tmp_path / "blog.json").write_text(json.dumps(make_snapshot(4).to_dict()))  # app "shop"
    with (
        ControlPlane.closed_url() as url,
        caplog.at_level(logging.WARNING, logger="coalmine.sdk"),
        RoutingSync(url, "k", ["shop", "blog"], cache_dir=tmp_path) as sync,
    ):
        assert not sync.wait_ready(0.5)
        assert sync.snapshot("shop") is None
        assert sync.snapshot("blog") is None
    assert "ignored the routing cache" in caplog.text
    assert "it is app shop" in caplog.text


def test_an_unwritable_cache_only_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    mock = MockPlane(make_snapshot(1))
    with (
        caplog.at_level(logging.WARNING, logger="coalmine.sdk"),
        RoutingSync(
            "http://p", "sdk-key", [APP], stream=False, http=mock.http(), cache_dir=blocker / "x"
        ) as sync,
    ):
        assert sync.wait_ready(5)
    assert "cannot write the routing cache" in caplog.text


def test_bad_settings_and_names_are_refused() -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        RoutingSync("http://p", "k", poll_interval=0)
    with pytest.raises(ValueError, match="backoff_max"):
        RoutingSync("http://p", "k", backoff_initial=1, backoff_max=0.5)
    with RoutingSync("http://p", "k") as sync, pytest.raises(InvalidInput, match="app name"):
        sync.add("Not An App")
    with pytest.raises(KeyError):
        sync.status("shop")


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    with RoutingSync("http://p", "k", backoff_initial=0.2, backoff_max=30) as sync:
        for attempt, top in [(0, 0.2), (1, 0.4), (3, 1.6), (8, 30), (100, 30)]:
            delays = [sync._backoff(attempt) for _ in range(50)]
            assert all(top / 2 <= d <= top for d in delays), (attempt, min(delays), max(delays))
            assert len(set(delays)) > 1  # jittered
