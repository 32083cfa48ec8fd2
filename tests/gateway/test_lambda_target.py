"""The gateway routing users to Lambda versions over the local Invoke endpoint.

botocore finds the endpoint the standard way, ``AWS_ENDPOINT_URL_LAMBDA``,
as a user points it at ``sam local start-lambda``.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from coalmine.core.context import RoutingContext, decode_context, find_in_baggage
from coalmine.core.forwarding import LambdaRef, lambda_ref
from coalmine.core.model import Channel, Phase, Release, TargetKind
from coalmine.core.routing import RoutingState, decide
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.core.strategy import parse_strategy
from coalmine.gateway import Gateway, GatewayConfig, IdentityConfig, LambdaTarget, StaticSource
from coalmine.gateway.server import PROTOCOL
from coalmine.integrations.lambda_local import LambdaFunction, LocalLambda, serve_in_thread
from tests.gateway.fixtures import counter
from tests.gateway.fixtures.harness import KEYRING, serve_asgi

TRUSTED = IdentityConfig(user_header="x-user-id")
"""the tests name their users in x-user-id"""

APP = "shop"
FNS = "tests.gateway.fixtures.lambda_fns"
ARN = "arn:aws:lambda:us-east-1:123456789012:function"
FUNCTIONS = {
    "web": LambdaFunction("web", {"1": f"{FNS}:web", "2": f"{FNS}:web"}, {"live": "1"}),
    "binary": LambdaFunction("binary", {"1": f"{FNS}:binary"}),
    "bare": LambdaFunction("bare", {"1": f"{FNS}:bare"}),
    "fails": LambdaFunction("fails", {"1": f"{FNS}:fails"}),
    "slow": LambdaFunction("slow", {"1": f"{FNS}:blocked"}, timeout=0.2),
    "single": LambdaFunction("single", {"1": f"{FNS}:blocked"}, concurrency=1),
}


def snapshot() -> RoutingSnapshot:
    baseline = dict.fromkeys(FUNCTIONS, "v1")
    release = Release(
        id="r1",
        app=APP,
        baseline=baseline,
        candidate={**baseline, "web": "v2"},
        salt="shop-lambda-salt",
        strategy=parse_strategy("Linear10PercentEvery1Minute"),
        exposure=3000,
        phase=Phase.RUNNING,
    )
    targets = {name: {"v1": f"lambda:{name}:1"} for name in FUNCTIONS}
    targets["web"] = {"v1": "lambda:web:live", "v2": f"{ARN}:web:2"}
    return RoutingSnapshot(RoutingState(app=APP, versions=baseline, release=release), 1, targets)


@dataclass
class Running:
    client: httpx.AsyncClient
    gateway: Gateway
    endpoint: LocalLambda
    state: RoutingState

    def user_in(self, channel: Channel) -> str:
        return next(
            f"user-{i}" for i in range(10_000) if decide(self.state, f"user-{i}").channel is channel
        )

    def counts(self, function: str, version: str, channel: str) -> tuple[int, int]:
        for m in self.gateway.recorder.totals():
            if (m.function, m.version, str(m.channel)) == (function, version, channel):
                return m.requests, m.errors
        return (0, 0)

    @property
    def target(self) -> LambdaTarget:
        target = self.gateway.targets[TargetKind.LAMBDA]
        assert isinstance(target, LambdaTarget)
        return target


@pytest.fixture(scope="module")
def local_lambda() -> Iterator[tuple[LocalLambda, str]]:
    endpoint = LocalLambda(FUNCTIONS)
    with serve_in_thread(endpoint, http=PROTOCOL) as url:
        yield endpoint, url


@asynccontextmanager
async def running(
    local_lambda: tuple[LocalLambda, str], monkeypatch: pytest.MonkeyPatch, **settings: Any
) -> AsyncIterator[Running]:
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", local_lambda[1])
    snap = snapshot()
    config = GatewayConfig(app=APP, keyring=KEYRING, **{"identity": TRUSTED, **settings})
    gateway = Gateway(config, StaticSource(snap))
    async with (
        serve_asgi(gateway, http=PROTOCOL) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        yield Running(client, gateway, local_lambda[0], snap.state)


@pytest.fixture
async def gw(
    local_lambda: tuple[LocalLambda, str], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Running]:
    async with running(local_lambda, monkeypatch) as r:
        yield r


def test_lambda_refs() -> None:
    short = lambda_ref("lambda:web:live")
    assert short == LambdaRef("web", "live")
    assert (short.name, short.region) == ("web", None)
    arn = lambda_ref(f"{ARN}:web:2")
    assert arn == LambdaRef(f"{ARN}:web", "2")
    assert (arn.name, arn.region) == ("web", "us-east-1")
    with pytest.raises(ValueError, match="a qualifier is required"):
        lambda_ref(f"{ARN}:web")
    assert lambda_ref("pkg.mod:handler") is None


async def test_users_are_sticky_and_the_context_reaches_the_function(gw: Running) -> None:
    for channel, version, executed in ((Channel.STABLE, "v1", "1"), (Channel.CANARY, "v2", "2")):
        user = gw.user_in(channel)
        for _ in range(3):
            r = await gw.client.post(
                "/web/orders/7?x=1",
                headers={"x-user-id": user, "baggage": "team=blue"},
                content=b'{"dish": "soup"}',
            )
            assert r.status_code == 201, r.text
            assert r.headers["x-coalmine-version"] == version
            assert r.headers["x-coalmine-channel"] == str(channel)
            assert r.headers["x-fn"] == "web"
            assert r.headers["set-cookie"] == "seen=1; Path=/"
            body = r.json()
            assert body["version"] == executed
            event = body["event"]
            assert (event["version"], event["rawPath"]) == ("2.0", "/web/orders/7")
            assert event["body"] == '{"dish": "soup"}'
            assert event["queryStringParameters"] == {"x": "1"}
            baggage = event["headers"]["baggage"]
            assert baggage.startswith("team=blue,coalmine=")
            got = decode_context(find_in_baggage(baggage), KEYRING, now=time.time())
            assert isinstance(got, RoutingContext)
            assert (got.channel, got.versions["web"]) == (channel, version)
    # the alias of v1 and the full ARN of v2 were used as given
    stable = await gw.client.get("/web", headers={"x-user-id": gw.user_in(Channel.STABLE)})
    assert stable.json()["arn"].endswith(":function:web:live")
    canary = await gw.client.get("/web", headers={"x-user-id": gw.user_in(Channel.CANARY)})
    assert canary.json()["arn"] == f"{ARN}:web:2"
    assert gw.counts("web", "v2", "canary") == (4, 0)


async def test_binary_and_bare_answers(gw: Running) -> None:
    r = await gw.client.get("/binary", headers={"x-user-id": "u1"})
    assert (r.status_code, r.content) == (200, b"\x00\xffraw")
    assert r.headers["content-type"] == "application/octet-stream"
    r = await gw.client.get("/bare", headers={"x-user-id": "u1"})
    assert (r.status_code, r.json()) == (200, ["bare", 1])
    assert r.headers["content-type"] == "application/json"


async def test_a_function_error_is_a_502_naming_it(gw: Running) -> None:
    user = gw.user_in(Channel.STABLE)
    r = await gw.client.get("/fails", headers={"x-user-id": user})
    assert r.status_code == 502
    body = r.json()
    assert body["detail"] == "Lambda fails v1 (fails:1) failed: KeyError: 'no such dish'"
    assert body["error"] == {"type": "KeyError", "message": "'no such dish'"}
    assert (body["function"], body["version"]) == ("fails", "v1")
    assert gw.counts("fails", "v1", "stable") == (1, 1)
    assert gw.target.outcomes[("fails", "v1", "function_error")] == 1
    exposition = (await gw.client.get("/metrics")).text
    assert (
        'coalmine_lambda_outcomes_total{function="fails",outcome="function_error",version="v1"} 1.0'
        in exposition
    )


async def test_a_function_timeout_is_a_504(gw: Running) -> None:
    user = gw.user_in(Channel.STABLE)
    counter.release_blocked.clear()
    try:
        r = await gw.client.get("/slow", headers={"x-user-id": user})
    finally:
        counter.release_blocked.set()
    assert r.status_code == 504
    body = r.json()
    assert body["detail"].startswith("Lambda slow v1 (slow:1) timed out: RequestId: ")
    assert body["error"]["type"] == "Sandbox.Timedout"
    assert gw.counts("slow", "v1", "stable") == (1, 1)
    assert gw.target.outcomes[("slow", "v1", "timeout")] == 1


async def test_the_gateways_own_timeout_is_a_504(
    local_lambda: tuple[LocalLambda, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(local_lambda, monkeypatch, timeout=0.3) as gw:
        counter.release_blocked.clear()
        try:
            r = await gw.client.get("/single", headers={"x-user-id": "u"})
        finally:
            counter.release_blocked.set()
        assert r.status_code == 504
        assert r.json()["detail"] == "Lambda single v1 (single:1) gave no answer within 0.3s"
        assert gw.target.outcomes[("single", "v1", "timeout")] == 1


async def test_throttling_is_a_429_with_retry_after(gw: Running) -> None:
    user = gw.user_in(Channel.STABLE)
    counter.release_blocked.clear()
    before = gw.endpoint.invocations
    try:
        first = asyncio.create_task(gw.client.get("/single", headers={"x-user-id": user}))
        while gw.endpoint.invocations == before:  # until the first holds the only slot
            await asyncio.sleep(0.01)
        r = await gw.client.get("/single", headers={"x-user-id": user})
    finally:
        counter.release_blocked.set()
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"
    assert r.json()["detail"] == "Lambda single v1 (single:1) is throttled: Rate Exceeded."
    assert (await first).json() == "late"
    assert gw.counts("single", "v1", "stable") == (2, 1)
    assert gw.target.outcomes[("single", "v1", "throttled")] == 1


async def test_an_unknown_qualifier_is_a_502_naming_lambdas_error(
    local_lambda: tuple[LocalLambda, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(local_lambda, monkeypatch) as gw:
        gw.gateway.source = StaticSource(  # bare is registered as a version Lambda lacks
            RoutingSnapshot(
                gw.state,
                2,
                {**snapshot().targets, "bare": {"v1": "lambda:bare:9"}},
            )
        )
        r = await gw.client.get("/bare", headers={"x-user-id": "u"})
    assert r.status_code == 502
    assert r.json()["detail"] == (
        "Lambda bare v1 (bare:9) could not be invoked: ResourceNotFoundException:"
        f" Function not found: {ARN}:bare:9"
    )


async def test_the_botocore_client_answers_alike(
    local_lambda: tuple[LocalLambda, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", local_lambda[1])
    snap = snapshot()
    gateway = Gateway(
        GatewayConfig(app=APP, keyring=KEYRING, identity=TRUSTED),
        StaticSource(snap),
        targets={TargetKind.LAMBDA: LambdaTarget(client="botocore")},
    )
    async with (
        serve_asgi(gateway, http=PROTOCOL) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        r = await client.get("/web/x", headers={"x-user-id": "u1"})
        assert r.status_code == 201
        assert r.json()["event"]["rawPath"] == "/web/x"
        r = await client.get("/fails", headers={"x-user-id": "u1"})
        assert r.status_code == 502
        assert r.json()["error"]["type"] == "KeyError"
        r = await client.get("/binary", headers={"x-user-id": "u1"})
        assert base64.b64encode(r.content) == base64.b64encode(b"\x00\xffraw")
