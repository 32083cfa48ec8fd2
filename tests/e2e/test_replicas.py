"""Several `coalmine serve` replicas on one PostgreSQL behave as one control plane.

A change made through one replica reaches the routing-stream subscribers of
another within a second (LISTEN/NOTIFY, no polling), and every discovery,
OFREP and routing answer of the other within a second too (their snapshots
are held in memory until the change feed says otherwise); `release status
--watch` follows a release to its end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.harness import ROOT, TOKEN, Server
from tests.services import child_env

EXAMPLE = str(ROOT / "examples" / "food_ordering" / "coalmine.yaml")
APP = "food-ordering"


@pytest.fixture
def replicas(pg_url: str) -> Iterator[tuple[Server, Server]]:
    a = Server(pg_url).start()
    b = Server(pg_url).start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def _start_release(server: Server) -> str:
    """Start a release of place-order v2 held at 10% (long enough for the test); its id."""
    out = server.cli(
        "release", "start", APP, "--set", "place-order=v2", "--strategy", "10%:10m, 100%", "--json"
    ).stdout
    release_id: str = json.loads(out)["id"]
    return release_id


def _rolled_back(phase: str | None) -> bool:
    return phase in ("rolling_back", "rolled_back")


def test_a_rollback_through_one_replica_reaches_the_other_within_a_second(
    replicas: tuple[Server, Server],
) -> None:
    a, b = replicas
    a.cli("apply", "-f", EXAMPLE)
    with b.watch(APP) as watcher:
        rid = _start_release(a)
        watcher.wait_for(lambda s: (s.get("release") or {}).get("phase") == "running")
        with a.api() as api:
            sent = time.monotonic()
            r = api.post(f"/v1/releases/{rid}/rollback", json={"reason": "replica test"})
            answered = time.monotonic()
            assert r.status_code == 200, r.text
        seen = watcher.wait_for(
            lambda s: _rolled_back((s.get("release") or {}).get("phase")), timeout=5
        )
        arrived = time.monotonic()
    assert seen["release"]["id"] == rid
    latency = arrived - answered
    assert latency < 1.0, f"the other replica's subscriber heard after {latency:.3f}s"
    assert arrived - sent < 2.0


def test_a_rollback_reaches_every_read_of_the_other_replica_within_a_second(
    replicas: tuple[Server, Server],
) -> None:
    """Discovery, OFREP and routing polls of replica b, answered from its memory, show a
    rollback made through replica a within a second: b's change feed drops its snapshot."""
    a, b = replicas
    a.cli("apply", "-f", EXAMPLE)
    with a.api() as api:
        keys = {
            role: api.post("/v1/tokens", json={"name": role, "role": role, "app": APP}).json()[
                "token"
            ]
            for role in ("browser", "sdk")
        }
    rid = _start_release(a)
    b.await_snapshot(APP, lambda s: (s.get("release") or {}).get("phase") == "running")
    browser = {"Authorization": f"Bearer {keys['browser']}"}
    with httpx.Client(base_url=b.url, timeout=10) as poll:

        def discovery(user: str) -> dict[str, Any]:
            r = poll.get("/v1/discovery", params={"app": APP, "user": user}, headers=browser)
            assert r.status_code == 200, r.text
            answer: dict[str, Any] = r.json()
            return answer

        def flag(user: str) -> dict[str, Any]:
            r = poll.post(
                f"/ofrep/v1/evaluate/flags/{APP}.place-order",
                json={"context": {"targetingKey": user}},
                headers=browser,
            )
            assert r.status_code == 200, r.text
            answer: dict[str, Any] = r.json()
            return answer

        def routing() -> dict[str, Any]:
            r = poll.get(
                f"/v1/apps/{APP}/routing", headers={"Authorization": f"Bearer {keys['sdk']}"}
            )
            assert r.status_code == 200, r.text
            answer: dict[str, Any] = r.json()
            return answer

        user = next(
            u for u in (f"user-{i}" for i in range(1000)) if discovery(u)["channel"] == "canary"
        )
        for _ in range(20):  # b answers from memory now (and keeps doing so)
            assert discovery(user)["versions"]["place-order"] == "v2"
            assert flag(user)["variant"] == "v2"
            assert routing()["release"]["phase"] == "running"

        with a.api() as api:
            r = api.post(f"/v1/releases/{rid}/rollback", json={"reason": "replica read test"})
            answered = time.monotonic()
            assert r.status_code == 200, r.text
        seen: dict[str, float] = {}
        checks = {
            "discovery": lambda: (
                discovery(user)["versions"]["place-order"] == "v1"
                and _rolled_back(discovery(user)["release"]["phase"])
            ),
            "ofrep": lambda: flag(user)["variant"] == "v1",
            "routing": lambda: _rolled_back(routing()["release"]["phase"]),
        }
        while len(seen) < len(checks):
            for name, check in checks.items():
                if name not in seen and check():
                    seen[name] = time.monotonic() - answered
            assert time.monotonic() - answered < 10, f"only {sorted(seen)} within 10 s"
    late = {name: round(after, 3) for name, after in seen.items() if after >= 1.0}
    assert not late, f"replica b showed the rollback after more than a second: {late}"


def test_status_watch_follows_a_release_to_promotion(replicas: tuple[Server, Server]) -> None:
    a, b = replicas
    a.cli("apply", "-f", EXAMPLE)
    a.cli("release", "start", APP, "--set", "place-order=v2", "--strategy", "50%:2s, 100%")
    proc = subprocess.run(
        [sys.executable, "-m", "coalmine.cli", "release", "status", APP, "--watch"],
        cwd=ROOT,
        env=child_env(COALMINE_URL=b.url, COALMINE_TOKEN=TOKEN, COLUMNS="120"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # not a terminal: one plain line per change (no progress bar, no ANSI), then the ending
    assert "\x1b" not in proc.stdout
    lines = proc.stdout.splitlines()
    assert lines[-1] == f"{APP}-1 promoted at 100% (exit 0)", lines
    assert any(": promoted (controller) " in line for line in lines), lines
