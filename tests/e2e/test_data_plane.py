"""The data plane end to end: control plane, gateway, SDK and discovery agree, chains stay pinned.

- a three-function chain (a -> b -> c, HTTP hops back through the gateway)
  at 20% runs one channel's versions end to end, also while exposure is
  raised to 60% during the run, and a user outside the cohort never reaches
  a candidate version;
- the SDK, the gateway (its response headers) and the discovery endpoint
  give the same channel and versions to the same users;
- with the control plane down the SDK and the gateway keep routing; once it
  is back they catch up within a second.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from coalmine.controller.plane import ControlPlane as Plane
from coalmine.controller.schemas import AppSpec, ReleaseCreate
from coalmine.core import Channel, bucket, decide
from coalmine.core.machine import Command, Tick
from coalmine.sdk import Client
from coalmine.store.db import open_store
from tests.e2e import chain_http
from tests.e2e.dataplane import APP, KEYRING, SPEC, GatewayServer
from tests.sdk import ControlPlane

pytestmark = pytest.mark.slow


class Stack:
    def __init__(self, plane: ControlPlane, gateway: GatewayServer, sdk_key: str) -> None:
        self.plane, self.gateway, self.sdk_key = plane, gateway, sdk_key
        self.http = httpx.Client(base_url=gateway.url, timeout=30)

    def call(self, function: str, user: str) -> httpx.Response:
        r = self.http.get(f"/{function}/", headers={"x-user-id": user})
        assert r.status_code == 200, r.text
        return r


@pytest.fixture
def stack(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    plane = ControlPlane(sqlite_url)
    plane.start()
    plane.service.catalog.apply(AppSpec.model_validate(SPEC), "e2e")
    key = plane.sdk_key(APP)
    gateway = GatewayServer(plane, key).start()
    monkeypatch.setenv("CHAIN_GATEWAY_URL", gateway.url)
    stack = Stack(plane, gateway, key)
    try:
        yield stack
    finally:
        stack.http.close()
        chain_http.reset()
        gateway.stop()
        plane.stop()


def start_release(plane: ControlPlane) -> str:
    rel = plane.service.releases.start(
        APP, ReleaseCreate(candidate={"a": "v2", "b": "v2", "c": "v2"}), "e2e"
    )
    plane.service.releases.advance(rel.id, Tick(time.time()))  # pending -> running at 20%
    assert plane.service.releases.get(rel.id).exposure == 2000
    return rel.id


def gateway_follows(stack: Stack, rid: str) -> None:
    """Wait until the gateway routes with release ``rid`` (it arrives over the routing stream)."""
    wait_for(lambda: stack.call("c", "probe").headers.get("x-coalmine-release") == rid)


def wait_for(check: object, timeout: float = 5.0) -> float:
    """Seconds until ``check()`` holds (events arrive over SSE; this only reads state)."""
    start = time.monotonic()
    while not check():  # type: ignore[operator]
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s")
        time.sleep(0.01)
    return time.monotonic() - start


def test_chains_run_one_channel_end_to_end_while_exposure_rises(stack: Stack) -> None:
    rid = start_release(stack.plane)
    gateway_follows(stack, rid)
    salt = stack.plane.snapshot(APP).state.release.salt  # type: ignore[union-attr]
    users = [f"user-{i}" for i in range(120)]
    never = [u for u in users if bucket(salt, u) >= 6000]  # outside the cohort even at 60%
    always = [u for u in users if bucket(salt, u) < 2000]  # inside from 20%
    assert never
    assert always

    def run(user: str) -> tuple[str, str, list[list[str]]]:
        r = stack.call("a", user)
        return user, r.headers["x-coalmine-channel"], r.json()["chain"]

    results: list[tuple[str, str, list[list[str]]]] = []
    with ThreadPoolExecutor(8) as pool:
        results += pool.map(run, users)
        # raise the exposure to 60% while chains are in flight
        later = pool.map(run, users * 2)
        stack.plane.service.releases.advance(rid, Tick(time.time() + 3601))
        results += later
        assert stack.plane.service.releases.get(rid).exposure == 6000
        results += pool.map(run, users)

    for user, channel, chain in results:
        versions = {v for _fn, v in chain}
        assert [fn for fn, _ in chain] == ["a", "b", "c"]
        assert len(versions) == 1, f"{user}'s chain mixed versions: {chain}"
        assert versions == {"v2" if channel == "canary" else "v1"}
        if user in never:
            assert versions == {"v1"}, f"{user} is outside the cohort but reached {chain}"
        if user in always:
            assert versions == {"v2"}


def test_sdk_gateway_and_discovery_agree_for_many_users(stack: Stack) -> None:
    gateway_follows(stack, start_release(stack.plane))
    users = [f"user-{i}" for i in range(int(os.environ.get("COALMINE_E2E_USERS", "10000")))]
    with Client(stack.plane.url, stack.sdk_key, apps=[APP], signing_keys=KEYRING) as client:
        sdk = {u: client.decide(APP, u) for u in users}
    with (
        stack.plane.app_client()
        if False
        else httpx.Client(
            base_url=stack.plane.url,
            timeout=60,
            headers={"Authorization": f"Bearer {stack.sdk_key}"},
        ) as http
    ):
        r = http.post("/v1/discovery/batch", json={"app": APP, "users": users})
        assert r.status_code == 200, r.text
        discovery = {a["user"]: a for a in r.json()["answers"]}

    def gateway(user: str) -> tuple[str, str, str]:
        h = stack.call("c", user).headers
        return user, h["x-coalmine-channel"], h["x-coalmine-version"]

    with ThreadPoolExecutor(8) as pool:
        via_gateway = {u: (ch, v) for u, ch, v in pool.map(gateway, users)}

    mismatches = [
        u
        for u in users
        if not (
            str(sdk[u].channel) == discovery[u]["channel"] == via_gateway[u][0]
            and sdk[u].versions["c"] == discovery[u]["versions"]["c"] == via_gateway[u][1]
            and dict(sdk[u].versions) == discovery[u]["versions"]
        )
    ]
    assert mismatches == []
    canary = sum(1 for u in users if sdk[u].channel is Channel.CANARY)
    assert 0.15 * len(users) < canary < 0.25 * len(users)


def test_fail_static_and_catch_up_within_a_second(stack: Stack) -> None:
    rid = start_release(stack.plane)
    gateway_follows(stack, rid)
    users = [f"user-{i}" for i in range(200)]
    with Client(stack.plane.url, stack.sdk_key, apps=[APP], signing_keys=KEYRING) as client:
        before_sdk = {u: client.decide(APP, u).channel for u in users}
        before_gw = {u: stack.call("c", u).headers["x-coalmine-channel"] for u in users}
        assert {str(v) for v in before_sdk.values()} == {"stable", "canary"}
        assert before_gw == {u: str(c) for u, c in before_sdk.items()}

        stack.plane.stop()  # the control plane is down
        assert {u: client.decide(APP, u).channel for u in users} == before_sdk
        assert {u: stack.call("c", u).headers["x-coalmine-channel"] for u in users} == before_gw

        # while it is down, the release is rolled back in the store (as by another replica)
        store = open_store(stack.plane.database_url)
        try:
            service = Plane(store)
            service.releases.operate(
                rid, Command.ROLLBACK, "e2e", "rolled back while the plane was down"
            )
            snapshot = service.snapshots.snapshot(APP)
        finally:
            store.dispose()
        expected = {u: decide(snapshot.state, u).channel for u in users}
        assert set(expected.values()) == {Channel.STABLE}

        up = stack.plane.start()  # back on the same port and store
        sdk_lag = wait_for(
            lambda: (
                client.decide(APP, users[0]).release_id == rid
                and all(client.decide(APP, u).channel is Channel.STABLE for u in users)
            )
        )
        gw_lag = wait_for(
            lambda: all(
                stack.call("c", u).headers["x-coalmine-channel"] == "stable" for u in users[:50]
            )
        )
        caught_up = time.monotonic() - up
    assert sdk_lag < 1.0, f"the SDK caught up after {sdk_lag:.2f}s"
    assert caught_up < 1.5, f"the gateway caught up {caught_up:.2f}s after the plane returned"
    assert gw_lag >= 0
