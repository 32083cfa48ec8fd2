"""Request bodies are limited before anything reads them: before authentication, before parsing,
on every route. A body declared too large is refused without reading a byte of it; a streamed
one is refused as soon as it passes the limit, so the server never holds more than the limit."""

from __future__ import annotations

import json
import select
import socket
import time
from typing import Any

import pytest

from coalmine.web import create_app
from coalmine.web.limits import DEFAULT_MAX_BODY_BYTES, BodyLimit
from tests.web.conftest import Web, running, serve

LIMIT = 64 * 1024
HUGE = 300 * 1024 * 1024  # the unauthenticated 300 MB POST


def said(limit: int = LIMIT) -> str:
    return (
        f"the request body is larger than {limit} bytes, the most this control plane takes"
        " (COALMINE_MAX_BODY_BYTES)"
    )


def response_of(sock: socket.socket, timeout: float = 15.0) -> tuple[int, dict[str, Any]]:
    """Read one HTTP/1.1 response (status, JSON body) from ``sock``."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed without an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return int(lines[0].split()[1]), json.loads(body[:length])


@pytest.fixture
def url(sqlite_url: str, admin_env: str) -> Any:
    with serve(create_app(database_url=sqlite_url, max_body_bytes=LIMIT)) as base:
        yield base


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=15)


@pytest.mark.parametrize(
    "path", ["/v1/apply", "/v1/metrics", "/v1/alarms", "/ofrep/v1/evaluate/flags"]
)
def test_a_body_declared_too_large_is_refused_without_reading_it(url: str, path: str) -> None:
    with connect(url) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: cm\r\nContent-Type: application/json\r\n"
            f"Content-Length: {HUGE}\r\n\r\n".encode()
        )  # and not one byte of the body: the answer must not wait for it
        status, body = response_of(sock)
    assert status == 413
    assert body == {"detail": said()}


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/metrics", 413),  # FastAPI reads a JSON body before the route's dependencies
        ("/v1/apply", 401),  # the route authenticates before it reads the document
    ],
)
def test_a_streamed_body_is_never_read_past_the_limit(url: str, path: str, status: int) -> None:
    """No token, a chunked body of 300 MB: the server answers (413 once it has read past the
    limit, or 401 before reading any) and reads no further; what the client manages to push
    meanwhile is what the socket buffers hold."""
    chunk = b"x" * 65536
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    with connect(url) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: cm\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        sock.setblocking(False)
        deadline = time.monotonic() + 30
        while sent < HUGE and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 1.0)
            if readable:
                break  # the server has answered
            if writable:
                try:
                    sent += sock.send(frame)
                except (BlockingIOError, InterruptedError):
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
        sock.setblocking(True)
        got, body = response_of(sock)
    assert got == status, body
    if status == 413:
        assert body == {"detail": said()}
    assert sent < 64 * 1024 * 1024, f"the client pushed {sent} bytes before the answer"


async def test_the_middleware_reads_no_further_than_the_limit() -> None:
    pulled: list[int] = []

    async def receive() -> dict[str, Any]:
        pulled.append(4096)
        return {"type": "http.request", "body": b"y" * 4096, "more_body": True}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass  # an app that reads everything it is given
        raise AssertionError("the body never ended")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": []}
    await BodyLimit(app, max_bytes=10_000)(scope, receive, send)
    assert sum(pulled) <= 10_000 + 4096
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 413
    assert json.loads(b"".join(m.get("body", b"") for m in sent[1:])) == {"detail": said(10_000)}


def test_bodies_within_the_limit_pass_and_the_limit_is_configurable(
    sqlite_url: str, admin_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert DEFAULT_MAX_BODY_BYTES == 4 * 1024 * 1024
    monkeypatch.setenv("COALMINE_MAX_BODY_BYTES", "2000")
    with running(sqlite_url) as web:
        doc = "app: shop\nfunctions:\n  api:\n    versions:\n      v1: shop.api:handler\n"
        headers = {**web.as_("deployer"), "Content-Type": "application/yaml"}
        assert web.client.post("/v1/apply", content=doc, headers=headers).status_code == 200
        r = web.client.post("/v1/apply", content=doc + "#" * 2000, headers=headers)
        assert r.status_code == 413
        assert r.json() == {"detail": said(2000)}
        assert web.client.get("/healthz").status_code == 200
    monkeypatch.setenv("COALMINE_MAX_BODY_BYTES", "lots")
    with pytest.raises(ValueError, match="COALMINE_MAX_BODY_BYTES must be a whole number"):
        create_app(database_url=sqlite_url)


def test_the_default_limit_takes_a_full_metrics_batch(sqlite_web: Web) -> None:
    """The flusher's largest batch (500 windows) of realistic histograms fits the default."""
    from coalmine.core.histogram import VersionMetrics
    from coalmine.core.model import Channel
    from coalmine.metrics import MetricWindow, batch, window_start

    start = window_start(time.time())
    windows = []
    for i in range(500):
        m = VersionMetrics("shop", "api", "v2", Channel.CANARY)
        for k in range(200):  # 200 distinct buckets, from 0.01 ms to about 70 s
            m.record(0.01 * 1.08**k)
        windows.append(MetricWindow(start - 10 * i, m))
    web = sqlite_web
    web.apply()
    body = json.dumps(batch("shop", windows, 10.0))
    assert 1024 * 1024 < len(body) < DEFAULT_MAX_BODY_BYTES
    r = web.client.post(
        "/v1/metrics",
        content=body,
        headers={**web.as_("deployer"), "Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text[:300]
    assert r.json()["merged"] == 500
