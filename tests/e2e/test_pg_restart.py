"""PostgreSQL stopped and started again mid-release: nothing lost, nothing repeated, no crash.

Two `coalmine serve` replicas share a private PostgreSQL cluster
(`tests.pg_cluster`: the shared server on :5432 must never be stopped): the
writer runs the controller, the reader (``--no-controller``) serves a routing
stream watcher and an SDK client, so what they hear of the writer's steps
reaches the reader only through LISTEN/NOTIFY. A release with short steps is
running at 10% when PostgreSQL is stopped, ``fast`` (sessions ended cleanly)
or ``immediate`` (a crash, recovered from the WAL on start), while the next
step comes due; it stays down for `DOWN` seconds and starts again on the same
port. Then:

- the release ends promoted, and its audit trail has every step exactly once,
  in order (none repeated, none lost), and one ending;
- the 30% step, due during the outage, was made once after it;
- the reader's routing stream stayed open through the outage and heard a step
  made after the restart (the feed's LISTEN reconnected), never a stale
  snapshot, and the SDK caught up;
- neither replica crashed, and the writer's controller lost its leader lock
  with the connection and took it again (no stuck lock);
- meanwhile the reader could not serve routing reads but answered its
  liveness probe, and the data plane failed static: the SDK kept deciding
  with the snapshot it had.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from coalmine.core import Channel
from coalmine.sdk import Client
from tests.e2e.harness import ROOT, TOKEN, Server, Watcher
from tests.pg_cluster import PgCluster, StopMode

pytestmark = pytest.mark.slow

EXAMPLE = ROOT / "examples" / "food_ordering" / "coalmine.yaml"
APP = "food-ordering"
STRATEGY = "10%:2s, 30%:1.5s, 60%:1.5s, 100%"
"""the 10% hold ends while PostgreSQL is down (it is stopped as soon as 10% is seen); the
holds after it outlast a LISTEN reconnection (about a second), so the reader hears a step"""
DOWN = 2.5
"""seconds PostgreSQL stays down: the one deliberate wait of the test"""
USERS = [f"user-{i}" for i in range(200)]
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def release_of(snapshot: dict[str, Any]) -> dict[str, Any]:
    return snapshot.get("release") or {}


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.02)


def sdk_phase(client: Client) -> str | None:
    snap = client.snapshot(APP)
    release = snap.state.release if snap is not None else None
    return str(release.phase) if release is not None else None


def sdk_exposure(client: Client) -> int | None:
    snap = client.snapshot(APP)
    release = snap.state.release if snap is not None else None
    return release.exposure if release is not None else None


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_release_survives_postgresql_stopped_and_started_again(
    private_pg: PgCluster, mode: StopMode
) -> None:
    url = private_pg.create_database(f"coalmine_{mode}")
    writer = Server(url).spawn()
    reader = Server(url, args=["--no-controller"]).spawn()
    try:
        writer.ready()
        reader.ready()
        with writer.api() as api:
            r = api.post(
                "/v1/apply",
                content=EXAMPLE.read_bytes(),
                headers={"content-type": "application/yaml"},
            )
            assert r.status_code == 200, r.text
            r = api.post("/v1/tokens", json={"name": "pg-fault", "role": "sdk", "app": APP})
            assert r.status_code == 201, r.text
            sdk_key = r.json()["token"]
        with (
            reader.watch(APP) as watcher,
            Client(reader.url, sdk_key, apps=[APP], metrics=False) as client,
        ):
            run_through_an_outage(private_pg, mode, writer, reader, watcher, client)
    finally:
        writer.stop()
        reader.stop()


def run_through_an_outage(
    cluster: PgCluster,
    mode: StopMode,
    writer: Server,
    reader: Server,
    watcher: Watcher,
    client: Client,
) -> None:
    with writer.api() as api:
        r = api.post(
            f"/v1/apps/{APP}/releases",
            json={"candidate": {"place-order": "v2", "notify-user": "v2"}, "strategy": STRATEGY},
        )
        assert r.status_code == 201, r.text
        rid = r.json()["id"]
    watcher.wait_for(lambda s: release_of(s).get("exposure") == 1000)
    wait_until(lambda: sdk_exposure(client) == 1000, "the SDK has the 10% step")
    held = client.snapshot(APP)
    assert held is not None
    before = {u: client.decide(APP, u) for u in USERS}
    assert {d.channel for d in before.values()} == {Channel.STABLE, Channel.CANARY}

    heard_before = len(watcher.snapshots)
    stopped_at = time.time()
    cluster.stop(mode)
    down_at = time.monotonic()
    # meanwhile the control plane cannot serve routing, yet lives, and the data plane
    # routes as it did (fail static)
    with httpx.Client(base_url=reader.url, timeout=5, headers=AUTH) as probe:
        assert probe.get("/healthz").status_code == 200
        down = probe.get(f"/v1/apps/{APP}/routing")
        assert down.status_code == 503, down.text  # retry, not a crash
        assert down.headers["retry-after"] == "1"
    assert {u: client.decide(APP, u) for u in USERS} == before
    time.sleep(max(0.0, DOWN - (time.monotonic() - down_at)))  # the deliberate outage
    assert {u: client.decide(APP, u) for u in USERS} == before, "the SDK kept its snapshot"
    assert client.snapshot(APP) == held
    cluster.start()

    done = watcher.wait_for(lambda s: release_of(s).get("phase") == "promoted", timeout=20)
    assert done["versions"] == {"kitchen": "v1", "notify-user": "v2", "place-order": "v2"}
    wait_until(lambda: sdk_phase(client) == "promoted", "the SDK caught up")
    # the reader heard the writer's steps only through its LISTEN connection, reconnected
    # (a stream coalesces changes into the latest snapshot: some steps may be folded)
    after = watcher.snapshots[heard_before:]
    heard = [(release_of(s).get("phase"), release_of(s).get("exposure")) for s in after]
    assert {("running", 3000), ("running", 6000)} & set(heard), heard
    assert heard[-1] == ("promoted", 10000), heard
    revisions = [int(s["revision"]) for s in watcher.snapshots]
    assert revisions == sorted(set(revisions)), f"a stale or repeated snapshot: {revisions}"
    assert watcher.ended is None, "the stream stayed open through the outage"

    with writer.api() as api:
        r = api.get(f"/v1/releases/{rid}/events", params={"limit": 1000})
        assert r.status_code == 200, r.text
        events = r.json()
    assert [(e["kind"], e["exposure"]) for e in events] == [
        ("created", 0),
        ("started", 1000),
        ("step", 3000),
        ("step", 6000),
        ("step", 10000),
        ("promoting", 10000),
        ("promoted", 10000),
    ], "every step exactly once, in order, and one ending"
    step_30 = next(e for e in events if e["exposure"] == 3000)
    assert step_30["at"] > stopped_at, "the fault fell before the 30% step was made"

    for server in (writer, reader):
        assert server.proc is not None
        assert server.proc.poll() is None, "a replica died:\n" + "\n".join(server.log)
    lost = [i for i, line in enumerate(writer.log) if "lost leadership" in line]
    acquired = [i for i, line in enumerate(writer.log) if "acquired leadership" in line]
    assert lost, "the controller noticed its lock connection was gone"
    assert acquired, "the controller led"
    assert acquired[-1] > lost[0], "the controller took its lock again after the restart"
