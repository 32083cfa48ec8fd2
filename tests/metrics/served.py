"""Every Prometheus exposition coalmine serves, with data in each, for the tests that read them.

`serving` runs the real control plane (uvicorn, over a store) and a real
gateway (fed by a static routing snapshot, flushing to that control plane)
and puts something in every metric they export: calls per version and
channel (answered, failed, a Lambda target that cannot be reached), a
forged routing context the gateway refuses, windows the control plane
refuses (a version it does not know), a release with its exposure and the
judge's verdicts. `Served.scrape` reads both ``/metrics`` as Prometheus
would. `promtool_binary` finds Debian's promtool, or skips (fails with
``COALMINE_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from coalmine.core.model import Channel
from coalmine.core.routing import decide
from coalmine.core.tracker import Action
from coalmine.core.verdict import Outcome
from coalmine.gateway import Gateway, GatewayConfig, IdentityConfig, StaticSource
from coalmine.gateway.server import PROTOCOL
from tests.controller.prometheus import INSTALL, prometheus_binary
from tests.gateway.fixtures.harness import APP, KEYRING, run_upstream, serve_asgi, shop_snapshot
from tests.helpers import free_port
from tests.sdk import ControlPlane
from tests.services import required

OFFLINE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
"""the gateway's Lambda target reads the AWS chain: fake credentials, an endpoint set apart"""
FUNCTIONS = {
    "greet": {
        "versions": {"v1": "fixtures.greet:v1", "v2": "fixtures.greet:v2"},
        "current": "v1",
    },
    "boom": {"versions": {"v1": "fixtures.counter:boom"}, "current": "v1"},
}
"""what the control plane knows of the gateway's app (not ``legacy``: its windows are refused)"""


def promtool_binary() -> str:
    """``promtool``, from Debian's prometheus package (installed by the project's script)."""
    found = shutil.which("promtool")
    if found:
        return found
    prometheus_binary()  # installs the package, or skips / fails saying why
    found = shutil.which("promtool")
    if found:
        return found
    message = f"promtool is not on PATH although prometheus is ({INSTALL.name} installs both)"
    if required():
        pytest.fail(message + " (COALMINE_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def sample_names(text: str) -> set[str]:
    """The names of the samples of an exposition (``_bucket``, ``_total``, ... included)."""
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


@dataclass
class Served:
    plane: ControlPlane
    gateway: Gateway
    gateway_url: str
    scraper: str
    """a scraper token of the control plane"""
    release: str
    stable: str
    canary: str
    """a user of each channel of the gateway's snapshot"""
    client: httpx.AsyncClient
    """calls the gateway"""

    @property
    def control_plane_target(self) -> str:
        return self.plane.url.removeprefix("http://")

    @property
    def gateway_target(self) -> str:
        return self.gateway_url.removeprefix("http://")

    async def scrape(self) -> dict[str, str]:
        """The text exposition of each, by name: ``control plane`` and ``gateway``."""
        auth = {"Authorization": f"Bearer {self.scraper}"}
        async with httpx.AsyncClient(timeout=10) as http:
            plane = await http.get(f"{self.plane.url}/metrics", headers=auth)
            gateway = await http.get(f"{self.gateway_url}/metrics")
        for r in (plane, gateway):
            assert r.status_code == 200, r.text
            assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        return {"control plane": plane.text, "gateway": gateway.text}

    async def traffic(self) -> None:
        """Calls the control plane takes: stable and canary, answered and failing."""
        for user in (self.stable, self.stable, self.canary):
            assert (await self.client.get("/greet/hi", headers={"x-user-id": user})).is_success
        assert (
            await self.client.get("/boom", headers={"x-user-id": self.canary})
        ).status_code == 502

    async def refused(self) -> None:
        """A Lambda target that cannot be reached (a version the control plane does not
        know: its windows are refused), and a forged routing context."""
        r = await self.client.get("/legacy", headers={"x-user-id": self.stable})
        assert r.status_code == 502  # its Lambda endpoint is down
        forged = {"x-user-id": self.stable, "baggage": "coalmine=forged.context"}
        assert (await self.client.get("/greet/hi", headers=forged)).is_success


@asynccontextmanager
async def serving(database_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    """The control plane and a gateway, each with data in every metric it exports."""
    for name, value in OFFLINE_AWS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", f"http://127.0.0.1:{free_port()}")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    plane = ControlPlane(database_url)
    await asyncio.to_thread(plane.start)
    try:
        await asyncio.to_thread(plane.seed, {"app": APP, "functions": FUNCTIONS})
        release = await asyncio.to_thread(plane.start_release, APP, greet="v2")
        for outcome in (Outcome.PASS, Outcome.INCONCLUSIVE, Outcome.PASS):
            await asyncio.to_thread(
                plane.service.runs.record,
                release.id,
                window_start=time.time() - 60,
                window_end=time.time(),
                outcome=outcome,
                action=Action.CONTINUE,
                results={},
                message=f"canary {outcome}",
            )
        key = await asyncio.to_thread(plane.sdk_key)
        scraper = await asyncio.to_thread(plane.tokens.create, "prometheus", "scraper")
        async with run_upstream() as upstream:
            snapshot = shop_snapshot(upstream.url)
            gateway = Gateway(
                GatewayConfig(
                    app=APP,
                    keyring=KEYRING,
                    identity=IdentityConfig(user_header="x-user-id"),
                    control_plane_url=plane.url,
                    sdk_key=key,
                ),
                StaticSource(snapshot),
            )
            users = [f"user-{i}" for i in range(10_000)]
            stable, canary = (
                next(u for u in users if decide(snapshot.state, u).channel is channel)
                for channel in (Channel.STABLE, Channel.CANARY)
            )
            async with (
                serve_asgi(gateway, http=PROTOCOL) as url,
                httpx.AsyncClient(base_url=url, timeout=10) as client,
            ):
                served = Served(
                    plane, gateway, url, scraper.token, release.id, stable, canary, client
                )
                flusher = gateway.flusher
                assert flusher is not None
                await served.traffic()
                assert await asyncio.to_thread(flusher.flush)
                await served.refused()
                await asyncio.to_thread(flusher.flush)  # a batch is all or nothing: refused
                assert flusher.stats.rejected > 0
                await served.traffic()  # the gateway's totals move on from the flushes
                yield served
    finally:
        await asyncio.to_thread(plane.stop)
