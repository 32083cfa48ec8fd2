"""Dot-segments and backslashes never reach a target: the gateway answers 400 instead."""

from __future__ import annotations

import asyncio

import pytest

from coalmine.core.model import TargetKind
from coalmine.gateway import Call, Gateway, GatewayConfig, MockTarget, Reply, StaticSource
from coalmine.gateway.paths import unsafe_path
from coalmine.gateway.server import PROTOCOL
from tests.gateway.fixtures.harness import APP, asgi_get, serve_asgi, shop_snapshot


def _gateway(seen: list[Call]) -> Gateway:
    def answer(call: Call, body: bytes) -> Reply:
        seen.append(call)
        return Reply(200, [], b"ok")

    return Gateway(
        GatewayConfig(app=APP),
        StaticSource(shop_snapshot("http://upstream.invalid")),
        targets={TargetKind.HTTP: MockTarget(answer)},
    )


async def _call(gateway: Gateway, raw_path: bytes) -> tuple[int, bytes]:
    status, _, body = await asgi_get(gateway, raw_path)
    return status, body


REFUSED = [
    b"/api/../../admin",
    b"/api/./x",
    b"/api/..",
    b"/api/x/.",
    b"/api/%2e%2e/admin",
    b"/api/%2E%2e/admin",
    b"/api/.%2e/admin",
    b"/api/..%2fadmin",
    b"/api/%2e%2e%2f%2e%2e%2fadmin",
    b"/api/%252e%252e/admin",
    b"/api/..\\admin",
    b"/api/x%5c..%5cadmin",
    b"/api\\..\\admin",
]


@pytest.mark.parametrize("raw", REFUSED)
async def test_dot_segments_and_backslashes_are_refused(raw: bytes) -> None:
    seen: list[Call] = []
    status, body = await _call(_gateway(seen), raw)
    assert status == 400
    assert b"dot-segment" in body or b"backslash" in body
    assert seen == []


@pytest.mark.parametrize(
    "raw", [b"/api/a..b/c", b"/api/...", b"/api/.well-known/x", b"/api/a%20b", b"/api/x.json"]
)
async def test_dots_inside_a_segment_pass_through(raw: bytes) -> None:
    seen: list[Call] = []
    status, _ = await _call(_gateway(seen), raw)
    assert status == 200
    assert seen[0].raw_rest == raw[len(b"/api") :]


@pytest.mark.parametrize("raw", REFUSED)
def test_unsafe_path_names_the_problem(raw: bytes) -> None:
    assert unsafe_path(raw) is not None


async def test_over_a_real_socket_the_upstream_never_sees_the_dot_segments() -> None:
    """uvicorn hands the raw path through; the gateway refuses it before any target."""
    seen: list[Call] = []
    async with serve_asgi(_gateway(seen), http=PROTOCOL) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /api/../../admin HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        await writer.drain()
        answer = await reader.read()
        writer.close()
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert seen == []
