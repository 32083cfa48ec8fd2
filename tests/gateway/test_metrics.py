"""The gateway counts every call per (function, version, channel): 2xx, 5xx answers and handler
exceptions; serves them at /metrics (so no function can be named metrics); and, with a control
plane configured, flushes them into the store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from coalmine.core.model import Channel
from coalmine.core.routing import decide
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.gateway import Gateway, GatewayConfig, IdentityConfig, StaticSource
from coalmine.gateway.server import PROTOCOL
from tests.gateway.fixtures.harness import APP, KEYRING, run_upstream, serve_asgi, shop_snapshot
from tests.sdk import ControlPlane

TRUSTED = IdentityConfig(user_header="x-user-id")
"""the tests name their users in x-user-id"""


@dataclass
class Running:
    client: httpx.AsyncClient
    snapshot: RoutingSnapshot
    gateway: Gateway

    def user_in(self, channel: Channel) -> str:
        return next(
            f"user-{i}"
            for i in range(10_000)
            if decide(self.snapshot.state, f"user-{i}").channel is channel
        )

    def counts(self, function: str, version: str, channel: str) -> tuple[int, int, int]:
        m = self.gateway.recorder.total(APP, function, version, channel)
        return (0, 0, 0) if m is None else (m.requests, m.errors, m.histogram.count)


@asynccontextmanager
async def running(**settings: Any) -> AsyncIterator[Running]:
    async with run_upstream() as upstream:
        snapshot = shop_snapshot(upstream.url)
        gateway = Gateway(
            GatewayConfig(app=APP, keyring=KEYRING, **{"identity": TRUSTED, **settings}),
            StaticSource(snapshot),
        )
        async with (
            serve_asgi(gateway, http=PROTOCOL) as url,
            httpx.AsyncClient(base_url=url, timeout=10) as client,
        ):
            yield Running(client, snapshot, gateway)


def samples(text: str) -> list[Any]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def one(found: list[Any], name: str, **labels: str) -> float:
    values = [s.value for s in found if s.name == name and labels.items() <= s.labels.items()]
    assert len(values) == 1, (name, labels, values)
    return float(values[0])


async def test_calls_are_counted_per_version_and_channel_and_exposed() -> None:
    async with running() as gw:
        stable, canary = gw.user_in(Channel.STABLE), gw.user_in(Channel.CANARY)
        get = gw.client.get
        for user in (stable, stable, canary):
            assert (await get("/greet/hi", headers={"x-user-id": user})).status_code == 200
        assert (await get("/api/echo", headers={"x-user-id": canary})).status_code == 200
        r = await get("/boom", headers={"x-user-id": stable})  # the handler raises
        assert r.status_code == 502
        r = await get("/down/x", headers={"x-user-id": stable})  # nobody listens: 5xx
        assert r.status_code == 502
        r = await get("/legacy", headers={"x-user-id": stable})  # its Lambda endpoint is down
        assert r.status_code == 502
        assert (await get("/nope", headers={"x-user-id": stable})).status_code == 404

        assert gw.counts("greet", "v1", "stable") == (2, 0, 2)
        assert gw.counts("greet", "v2", "canary") == (1, 0, 1)
        assert gw.counts("api", "v2", "canary") == (1, 0, 1)
        assert gw.counts("boom", "v1", "stable") == (1, 1, 1)
        assert gw.counts("down", "v1", "stable") == (1, 1, 1)
        assert gw.counts("legacy", "v1", "stable") == (1, 1, 1)
        assert gw.gateway.recorder.stats.recorded == 7  # the unknown function is not a call

        r = await get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        got = samples(r.text)
        labels = {"app": APP, "function": "greet", "channel": "stable", "version": "v1"}
        assert one(got, "coalmine_requests_total", **labels) == 2
        assert one(got, "coalmine_errors_total", **labels) == 0
        assert one(got, "coalmine_request_duration_seconds_count", **labels) == 2
        boom = {"app": APP, "function": "boom", "version": "v1", "channel": "stable"}
        assert one(got, "coalmine_errors_total", **boom) == 1
        canary_greet = {"function": "greet", "version": "v2", "channel": "canary"}
        assert one(got, "coalmine_requests_total", **canary_greet) == 1
        assert one(got, "coalmine_request_duration_seconds_bucket", **canary_greet, le="+Inf") == 1

        r = await get("/metrics/anything")
        assert r.status_code == 404
        detail = r.json()["detail"]
        assert "a function named metrics cannot be called through the gateway" in detail
        r = await get("/metrics", headers={"accept": "application/openmetrics-text"})
        assert r.headers["content-type"].startswith("application/openmetrics-text")
        assert gw.gateway.flusher is None  # no control plane configured


async def test_with_a_control_plane_the_windows_arrive_in_the_store(sqlite_url: str) -> None:
    plane = ControlPlane(sqlite_url)
    await asyncio.to_thread(plane.start)
    try:
        # the control plane takes the metrics of the versions it has registered only
        functions = {
            "greet": {"versions": {"v1": "fixtures.greet:v1", "v2": "fixtures.greet:v2"}},
            "boom": {"versions": {"v1": "fixtures.counter:boom"}},
        }
        await asyncio.to_thread(plane.seed, {"app": APP, "functions": functions})
        key = await asyncio.to_thread(plane.sdk_key)
        async with running(control_plane_url=plane.url, sdk_key=key) as gw:
            stable, canary = gw.user_in(Channel.STABLE), gw.user_in(Channel.CANARY)
            for user in (stable, canary, canary):
                await gw.client.get("/greet/hi", headers={"x-user-id": user})
            await gw.client.get("/boom", headers={"x-user-id": canary})
            flusher = gw.gateway.flusher
            assert flusher is not None
            assert await asyncio.to_thread(flusher.flush)
            assert flusher.stats.sent == 3

            def stored(function: str, version: str, channel: str) -> tuple[int, int, int]:
                m = plane.service.metrics.metrics_for(APP, function, version, channel, since=0)
                return (m.requests, m.errors, m.histogram.count)

            assert await asyncio.to_thread(stored, "greet", "v1", "stable") == (1, 0, 1)
            assert await asyncio.to_thread(stored, "greet", "v2", "canary") == (2, 0, 2)
            assert await asyncio.to_thread(stored, "boom", "v1", "canary") == (1, 1, 1)
            await gw.client.get("/greet/hi", headers={"x-user-id": stable})
        # the gateway's shutdown flushed what was left
        assert await asyncio.to_thread(stored, "greet", "v1", "stable") == (2, 0, 2)
        # and the control plane exposes what it ingested
        scraper = await asyncio.to_thread(plane.tokens.create, "prometheus", "scraper")
        auth = {"Authorization": f"Bearer {scraper.token}"}
        async with httpx.AsyncClient(base_url=plane.url, headers=auth) as http:
            got = samples((await http.get("/metrics")).text)
        assert one(got, "coalmine_requests_total", function="greet", channel="canary") == 2
    finally:
        await asyncio.to_thread(plane.stop)
