"""The control plane as a user runs it: `coalmine serve`, `apply`, `release ...`, restarts.

On a temporary SQLite file and on the real PostgreSQL server: apply the
example app, run a release with short steps to promotion while the server is
killed and restarted mid-release (it continues, no step skipped or
repeated), then start another release and roll it back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.harness import ROOT, Server

EXAMPLE = str(ROOT / "examples" / "food_ordering" / "coalmine.yaml")
APP = "food-ordering"


def release_of(snapshot: dict[str, Any]) -> dict[str, Any]:
    return snapshot.get("release") or {}


@pytest.fixture
def server(database_url: str) -> Iterator[Server]:
    srv = Server(database_url).start()
    try:
        yield srv
    finally:
        srv.stop()


def step_events(server: Server, release_id: str) -> list[tuple[str, int | None]]:
    out = server.cli("events", "--release", release_id, "--json", "--limit", "1000")
    return [(e["kind"], e["exposure"]) for e in json.loads(out.stdout)]


@pytest.mark.slow
def test_release_lifecycle_survives_a_restart(server: Server, database_url: str) -> None:
    first = server.cli("apply", "-f", EXAMPLE)
    assert "register place-order v2" in first.stdout
    again = server.cli("apply", "-f", EXAMPLE, "--json")
    assert json.loads(again.stdout)["changed"] is False

    watcher = server.watch(APP)
    started = server.cli(
        "release",
        "start",
        APP,
        "--set",
        "place-order=v2",
        "--set",
        "notify-user=v2",
        "--strategy",
        "10%:1s, 30%:2s, 60%:1s, 100%",
        "--json",
    )
    rid = json.loads(started.stdout)["id"]
    assert rid == f"{APP}-1"

    # a second release while one is active: refused, exit code 1 (operation failed)
    clash = server.cli("release", "start", APP, "--set", "place-order=v2", check=False)
    assert clash.returncode == 1
    assert "active release" in clash.stderr

    # kill the server (and its controller) in the middle of the 30% step
    watcher.wait_for(lambda s: release_of(s).get("exposure") == 3000)
    server.kill()
    watcher.close()
    restarted = Server(database_url)
    restarted.start()
    try:
        done = restarted.await_snapshot(APP, lambda s: release_of(s).get("phase") == "promoted")
        assert done["versions"] == {"kitchen": "v1", "notify-user": "v2", "place-order": "v2"}
        kinds = [k for k, _ in step_events(restarted, rid)]
        exposures = [e for k, e in step_events(restarted, rid) if k in ("started", "step")]
        assert exposures == [1000, 3000, 6000, 10000], "each step exactly once, in order"
        assert kinds[0] == "created"
        assert kinds[-2:] == ["promoting", "promoted"]

        status = json.loads(restarted.cli("release", "status", rid, "--json").stdout)
        assert status["phase"] == "promoted"

        # another release, rolled back by an operator with a reason
        with restarted.api() as api:
            r = api.post(
                f"/v1/apps/{APP}/functions/place-order/versions",
                json={"name": "v4", "target": "examples.food_ordering.place_order_v1:handler"},
            )
            assert r.status_code == 201, r.text
        second = restarted.cli(
            "release",
            "start",
            APP,
            "--set",
            "place-order=v4",
            "--strategy",
            "10%:60s, 100%",
            "--json",
        )
        rid2 = json.loads(second.stdout)["id"]
        restarted.await_snapshot(
            APP,
            lambda s: release_of(s).get("id") == rid2 and release_of(s).get("phase") == "running",
        )
        rolled = restarted.cli("release", "rollback", APP, "--reason", "p99 too high", "--json")
        assert json.loads(rolled.stdout)["phase"] == "rolling_back"
        final = restarted.await_snapshot(APP, lambda s: release_of(s).get("phase") == "rolled_back")
        assert final["versions"]["place-order"] == "v2", "a rollback keeps the baseline"
        events = json.loads(restarted.cli("events", "--release", rid2, "--json").stdout)
        assert any("p99 too high" in e["message"] for e in events)
        assert any(e["kind"] == "rolled_back" for e in events)

        listed = json.loads(restarted.cli("release", "list", "--app", APP, "--json").stdout)
        assert [r["id"] for r in listed] == [rid2, rid]
        # an operation the phase forbids: exit code 1 with the reason on one line
        late = restarted.cli("release", "pause", rid2, check=False)
        assert late.returncode == 1
        assert "cannot pause" in late.stderr
    finally:
        restarted.stop()


def test_bad_input_exit_codes(server: Server) -> None:
    unknown = server.cli("release", "start", "no-such-app", "--set", "a=v1", check=False)
    assert unknown.returncode == 2
    assert "no app named 'no-such-app'" in unknown.stderr
    bad_set = server.cli("release", "start", APP, "--set", "oops", check=False)
    assert bad_set.returncode == 2
    assert "FUNCTION=VERSION" in bad_set.stderr
    missing = server.cli("apply", "-f", "/nonexistent/coalmine.yaml", check=False)
    assert missing.returncode == 2
    no_token = server.cli("release", "list", "--token", "cm_wrong_token_0123456789", check=False)
    assert no_token.returncode == 1
    assert "401" in no_token.stderr
