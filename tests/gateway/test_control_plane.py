"""The gateway following a real control plane: rollback within a second, then fail static."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from coalmine.controller.schemas import ReleaseCreate, VersionCreate
from coalmine.core.machine import Command, Tick
from coalmine.core.model import Channel
from coalmine.core.routing import decide
from coalmine.gateway import GatewayConfig, IdentityConfig, SyncSource, create_gateway
from coalmine.gateway.server import PROTOCOL
from coalmine.web import create_app
from tests.gateway.fixtures.harness import KEYRING, ThreadServer, serve_asgi

ORDERS = "tests.gateway.fixtures.orders_v{}:handler"


async def test_a_rollback_reaches_the_gateway_within_a_second_and_it_fails_static(
    sqlite_url: str, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    control = create_app(database_url=sqlite_url, heartbeat=1.0)
    service, tokens = control.state.plane, control.state.tokens
    service.catalog.create_app("shop", "test")
    service.catalog.add_function("shop", "orders", "test")
    for v in (1, 2):
        service.catalog.register_version(
            "shop", "orders", VersionCreate(name=f"v{v}", target=ORDERS.format(v)), "test"
        )
    service.catalog.set_current("shop", "orders", "v1", "test")
    release = service.releases.start(
        "shop",
        ReleaseCreate(candidate={"orders": "v2"}, strategy="Canary30Percent5Minutes"),
        "test",
    )
    service.releases.advance(
        release.id, Tick(time.time() + 1e6)
    )  # the controller's first step: 30%
    key = tokens.create("gateway", "sdk", "shop").token
    cache = tmp_path / "cache"

    with ThreadServer(control) as plane:
        base = plane.url
        config = GatewayConfig(
            app="shop",
            control_plane_url=base,
            sdk_key=key,
            keyring=KEYRING,
            identity=IdentityConfig(user_header="x-user-id"),
            cache_dir=str(cache),
        )
        gateway = create_gateway(config)
        assert isinstance(gateway.source, SyncSource)
        async with (
            serve_asgi(gateway, http=PROTOCOL) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            snapshot = gateway.source.snapshot("shop")  # ready when the lifespan has started
            assert snapshot is not None
            assert snapshot.state.exposure == 3000
            user = next(
                u
                for u in (f"user-{i}" for i in range(1000))
                if decide(snapshot.state, u).channel is Channel.CANARY
            )
            r = await client.get("/orders", headers={"x-user-id": user})
            assert r.status_code == 200, r.text
            assert (r.headers["x-coalmine-channel"], r.json()["file"]) == ("canary", "orders_v2")

            await asyncio.to_thread(
                service.releases.operate, release.id, Command.ROLLBACK, "test", "p99 doubled"
            )
            rolled_back = time.monotonic()
            while True:
                r = await client.get("/orders", headers={"x-user-id": user})
                if r.headers["x-coalmine-channel"] == "stable":
                    break
                assert time.monotonic() - rolled_back < 1.0, "the rollback took over a second"
            latency = time.monotonic() - rolled_back
            record_property("rollback_to_gateway_seconds", round(latency, 4))
            print(f"rollback reached the gateway after {latency * 1000:.1f} ms")
            assert (r.headers["x-coalmine-version"], r.json()["file"]) == ("v1", "orders_v1")
            revision = (await client.get("/healthz")).json()["revision"]

            # the control plane goes away: the gateway keeps routing with what it has
            stopping = time.monotonic()
            await asyncio.to_thread(plane.stop)
            print(f"the control plane stopped in {time.monotonic() - stopping:.2f} s")
            r = await client.get("/orders", headers={"x-user-id": user})
            assert r.status_code == 200
            assert (r.headers["x-coalmine-channel"], r.json()["file"]) == ("stable", "orders_v1")

    # a new gateway started while the control plane is down routes from the disk cache
    config = GatewayConfig(
        app="shop",
        control_plane_url=base,
        sdk_key=key,
        keyring=KEYRING,
        cache_dir=str(cache),
    )
    async with (
        serve_asgi(create_gateway(config), http=PROTOCOL) as url,
        httpx.AsyncClient(base_url=url) as c,
    ):
        assert (await c.get("/healthz")).json()["revision"] == revision
        r = await c.get("/orders", headers={"x-user-id": user})
        assert (r.status_code, r.headers["x-coalmine-version"]) == (200, "v1")
