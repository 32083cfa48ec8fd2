"""RoutingSync against the real control plane: stream, rollback, fail static, restart, cache, poll."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coalmine.core.machine import Command
from coalmine.core.model import Channel, Phase, Reason
from coalmine.sdk import Client, RoutingSync
from tests.sdk import ACTOR, APP, KEYRING, Changes, ControlPlane, wait_until


def _running(url: str) -> Iterator[ControlPlane]:
    p = ControlPlane(url)
    p.start()
    p.seed()
    p.start_release()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def plane(sqlite_url: str) -> Iterator[ControlPlane]:
    """A running control plane over SQLite with the shop app and a release at 30%."""
    yield from _running(sqlite_url)


@pytest.fixture
def any_plane(database_url: str) -> Iterator[ControlPlane]:
    """The same over SQLite and over PostgreSQL (changes reach streams by LISTEN/NOTIFY)."""
    yield from _running(database_url)


def _phase(snapshot: object) -> Phase | None:
    rel = snapshot.state.release  # type: ignore[attr-defined]
    return rel.phase if rel is not None else None


def test_follows_the_stream_and_a_rollback_arrives_within_a_second(
    any_plane: ControlPlane, capsys: pytest.CaptureFixture[str]
) -> None:
    plane = any_plane
    changes = Changes()
    with RoutingSync(plane.url, plane.sdk_key(), [APP]) as sync:
        sync.on_change(changes)
        assert sync.wait_ready(5)
        held = sync.snapshot(APP)
        assert held is not None
        assert held == plane.snapshot()
        status = sync.status(APP)
        assert (status.mode, status.connected, status.source) == ("stream", True, "stream")
        assert status.revision == held.revision
        assert status.age is not None
        assert status.age < 5

        rel = plane.service.releases.active(APP)
        assert rel is not None
        plane.service.releases.operate(rel.id, Command.ROLLBACK, ACTOR, "p99 doubled")
        answered = time.monotonic()
        at, snap = changes.wait_for(lambda s: _phase(s) is Phase.ROLLING_BACK)
        latency = at - answered
        assert latency < 1.0, f"the rollback reached the SDK after {latency:.3f}s"
        assert snap.revision > held.revision
        assert sync.snapshot(APP) == plane.snapshot()
        assert sync.status(APP).connects == 1  # no reconnect needed
    with capsys.disabled():
        print(f"\n  rollback -> SDK on_change ({plane.database_url[:10]}): {latency * 1000:.1f} ms")
    assert sync.status(APP).mode == "closed"


def test_fail_static_while_down_then_catches_up_within_a_second_of_the_restart(
    plane: ControlPlane, capsys: pytest.CaptureFixture[str]
) -> None:
    changes = Changes()
    users = [f"user-{i}" for i in range(2000)]
    with Client(
        plane.url, plane.sdk_key(), apps=[APP], signing_keys=KEYRING, backoff_max=0.4
    ) as client:
        client.on_change(changes)
        before = client.snapshot(APP)
        assert before is not None
        decided = [client.decide(APP, u) for u in users]
        assert {d.reason for d in decided} == {Reason.COHORT}
        assert {d.channel for d in decided} == {Channel.CANARY, Channel.STABLE}

        plane.stop()  # the control plane dies
        wait_until(lambda: not client.status(APP).connected, what="the sync to notice")
        wait_until(lambda: client.status(APP).polls >= 2, what="polls while down")
        status = client.status(APP)
        assert status.mode == "polling"
        assert status.last_error is not None
        assert "ConnectError" in status.last_error
        # fail static: the last snapshot is still in hand and routes everyone as before
        assert client.snapshot(APP) is before
        assert [client.decide(APP, u) for u in users] == decided

        # while it is down, an operator rolls the release back (in the same store)
        plane.prepare()
        rel = plane.service.releases.active(APP)
        assert rel is not None
        plane.service.releases.operate(
            rel.id, Command.ROLLBACK, ACTOR, "rolled back during the outage"
        )
        assert client.snapshot(APP) is before

        up = plane.start()  # same port, same store
        at, snap = changes.wait_for(lambda s: _phase(s) is Phase.ROLLING_BACK, timeout=5)
        catch_up = at - up
        assert catch_up < 1.0, f"caught up {catch_up:.3f}s after the control plane came back"
        assert snap == plane.snapshot()
        after = [client.decide(APP, u) for u in users]
        assert {(d.channel, d.reason) for d in after} == {(Channel.STABLE, Reason.ROLLED_BACK)}
        wait_until(lambda: client.status(APP).mode == "stream", what="the stream to reconnect")
        assert client.status(APP).connected
        assert client.status(APP).connects == 2
    with capsys.disabled():
        print(f"\n  control plane back -> SDK caught up: {catch_up * 1000:.1f} ms")


def test_cold_start_from_the_disk_cache_when_the_control_plane_is_down(
    plane: ControlPlane, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    key = plane.sdk_key()
    with RoutingSync(plane.url, key, [APP], cache_dir=cache) as sync:
        assert sync.wait_ready(5)
        live = sync.snapshot(APP)
        assert live is not None
    # written atomically: the file and nothing else (no temporary file left)
    assert [p.name for p in cache.iterdir()] == [f"{APP}.json"]
    assert json.loads((cache / f"{APP}.json").read_text()) == live.to_dict()

    plane.stop()
    started = time.monotonic()
    with RoutingSync(plane.url, key, [APP], cache_dir=cache) as cold:
        assert cold.wait_ready(5)
        assert time.monotonic() - started < 2
        assert cold.snapshot(APP) == live
        status = cold.status(APP)
        assert status.source == "cache"
        assert not status.connected
        assert status.last_error is not None

        plane.start()  # the control plane answers: the cached revision is confirmed
        wait_until(lambda: cold.status(APP).source == "stream", what="the stream")
        assert cold.snapshot(APP) == live


def test_no_cache_and_no_control_plane_means_not_ready(tmp_path: Path) -> None:
    with ControlPlane.closed_url() as url, RoutingSync(url, "k", [APP], cache_dir=tmp_path) as sync:
        assert not sync.wait_ready(0.5)
        assert sync.snapshot(APP) is None
        status = sync.status(APP)
        assert (status.source, status.revision, status.age) == (None, None, None)


def test_poll_fallback_with_etag_gets_304s_then_the_change(plane: ControlPlane) -> None:
    changes = Changes()
    with RoutingSync(plane.url, plane.sdk_key(), [APP], stream=False, poll_interval=0.05) as sync:
        sync.on_change(changes)
        assert sync.wait_ready(5)
        first = sync.snapshot(APP)
        assert first is not None
        wait_until(lambda: sync.status(APP).not_modified >= 3, what="304 answers")
        assert sync.snapshot(APP) is first  # a 304 keeps the same snapshot

        rel = plane.service.releases.active(APP)
        assert rel is not None
        plane.service.releases.operate(rel.id, Command.ROLLBACK, ACTOR, "by poll")
        _, snap = changes.wait_for(lambda s: _phase(s) is Phase.ROLLING_BACK)
        assert snap.revision > first.revision
        status = sync.status(APP)
        assert (status.mode, status.connected, status.source) == ("polling", True, "poll")
        assert status.connects == 0


def test_a_key_of_another_app_is_refused_and_reported(plane: ControlPlane) -> None:
    plane.service.catalog.create_app("blog", ACTOR)
    with RoutingSync(plane.url, plane.sdk_key("blog"), [APP], backoff_max=0.2) as sync:
        # wait for the refusal itself: a fixed wait (0.5 s) failed once when a GC pause
        # of the long test process kept the sync thread from even trying
        wait_until(lambda: sync.status(APP).last_error is not None, what="the refusal")
        assert not sync.wait_ready(0)
        status = sync.status(APP)
        assert status.last_error is not None
        assert "HTTP 403" in status.last_error
        assert sync.snapshot(APP) is None
