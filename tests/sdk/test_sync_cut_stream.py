"""RoutingSync when the routing stream is cut mid-message: it reconnects and never applies half.

A raw socket server plays the control plane's stream, so that it can cut a
connection at any byte: the first connection sends a whole snapshot event,
then half of the next one's ``data:`` line, and closes; the second sends a
whole ``data:`` line but closes before the blank line that ends an event
(an event that never ended is dropped, as the SSE spec says); the third
sends a whole event and stays open. Polls between streams answer 503.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest

from coalmine.sdk import RoutingSync
from tests.sdk import APP, Changes, make_snapshot


def event(revision: int) -> bytes:
    data = json.dumps(make_snapshot(revision).to_dict(), separators=(",", ":"))
    return f"event: snapshot\nid: {revision}\ndata: {data}\n\n".encode()


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"cache-control: no-cache\r\nconnection: close\r\n\r\n"
)
NOT_NOW = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b'content-length: 23\r\nconnection: close\r\n\r\n{"detail": "not now"}\r\n'
)
HALF = event(5)[: len(event(5)) // 2]  # cut inside the JSON of the data line
UNENDED = event(6)[:-1]  # the whole data line, without the blank line that ends it
STREAMS = [event(1) + HALF, UNENDED, event(2)]


class CuttingPlane:
    """Serves ``STREAMS`` in turn, one per stream connection; the last stays open."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.streams = 0
        self.open: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                head += chunk
            if b"/routing/stream" not in head.split(b"\r\n", 1)[0]:
                conn.sendall(NOT_NOW)
                conn.close()
                continue
            body = STREAMS[min(self.streams, len(STREAMS) - 1)]
            self.streams += 1
            conn.sendall(STREAM_HEAD + body)
            if self.streams < len(STREAMS):
                conn.close()  # the cut
            else:
                self.open.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.open:
            conn.close()


@pytest.fixture
def plane() -> Iterator[CuttingPlane]:
    p = CuttingPlane()
    try:
        yield p
    finally:
        p.close()


def test_a_stream_cut_mid_message_is_reconnected_and_the_half_never_applied(
    plane: CuttingPlane,
) -> None:
    changes = Changes()
    with RoutingSync(
        plane.url, "cmsdk_test", backoff_initial=0.02, backoff_max=0.05, poll_interval=60
    ) as sync:
        sync.on_change(changes)
        sync.add(APP)
        changes.wait_for(lambda s: s.revision == 2, timeout=10)
        held = sync.snapshot(APP)
        assert held is not None
        assert held.revision == 2
        assert sync.status(APP).mode == "stream"
    # revision 1, then 2 from the third connection: never 5 (cut mid-line), never
    # 6 (an event that never ended)
    assert [s.revision for _, _, s in changes.seen] == [1, 2]
    assert plane.streams >= 3
