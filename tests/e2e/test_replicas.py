"""Several `coalmine serve` replicas on one PostgreSQL behave as one control plane.

A change made through one replica reaches the routing-stream subscribers of
another within a second (LISTEN/NOTIFY, no polling), and `release status
--watch` follows a release to its end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

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


def test_a_rollback_through_one_replica_reaches_the_other_within_a_second(
    replicas: tuple[Server, Server],
) -> None:
    a, b = replicas
    a.cli("apply", "-f", EXAMPLE)
    with b.watch(APP) as watcher:
        rid = json.loads(
            a.cli(
                "release",
                "start",
                APP,
                "--set",
                "place-order=v2",
                "--strategy",
                "10%:10m, 100%",
                "--json",
            ).stdout
        )["id"]
        watcher.wait_for(lambda s: (s.get("release") or {}).get("phase") == "running")
        with a.api() as api:
            sent = time.monotonic()
            r = api.post(f"/v1/releases/{rid}/rollback", json={"reason": "replica test"})
            answered = time.monotonic()
            assert r.status_code == 200, r.text
        seen = watcher.wait_for(
            lambda s: (s.get("release") or {}).get("phase") in ("rolling_back", "rolled_back"),
            timeout=5,
        )
        arrived = time.monotonic()
    assert seen["release"]["id"] == rid
    latency = arrived - answered
    assert latency < 1.0, f"the other replica's subscriber heard after {latency:.3f}s"
    assert arrived - sent < 2.0


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
    assert "promoted" in proc.stdout
    assert "100% exposed" in proc.stdout
