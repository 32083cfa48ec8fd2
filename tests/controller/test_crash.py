"""Durability with real processes: `python -m coalmine.controller`, SIGKILLed mid-release.

All timing is in the store, so a controller killed at any point and started
again (or a standby that takes over) continues where the release was: each
step exactly once, in order, none skipped, none repeated, none early.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from coalmine.controller.plane import ControlPlane
from coalmine.core.records import EventRecord
from coalmine.store.db import open_store
from tests import services
from tests.controller import start_release, wait_for

pytestmark = pytest.mark.slow

STRATEGY = "10%:1s, 30%:1s, 60%:1s, 100%"
EXPECTED = [
    ("started", 1000),
    ("step", 3000),
    ("step", 6000),
    ("step", 10000),
    ("promoting", 10000),
    ("promoted", 10000),
]


class ControllerProcess:
    """One `python -m coalmine.controller` process, its stderr in a file."""

    def __init__(self, url: str, log: Path, env: dict[str, str]) -> None:
        self.log_path = log
        self._log: IO[bytes] = log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "coalmine.controller",
                "--database-url",
                url,
                "--interval",
                "0.1",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env=env,
        )
        self.actor_suffix = f":{self.proc.pid}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(15)
        self._log.close()
        return code


@pytest.fixture(scope="session")
def child_env() -> dict[str, str]:
    """The controllers' environment (see tests.services.child_env)."""
    return services.child_env()


class Spawner:
    """Starts controller processes; kills what is left at the end."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path = tmp_path
        self.env = env
        self.started: list[ControllerProcess] = []

    def __call__(self, url: str) -> ControllerProcess:
        log = self.tmp_path / f"controller-{len(self.started) + 1}.log"
        p = ControllerProcess(url, log, self.env)
        self.started.append(p)
        return p


@pytest.fixture
def spawn(tmp_path: Path, child_env: dict[str, str]) -> Iterator[Spawner]:
    spawner = Spawner(tmp_path, child_env)
    yield spawner
    for p in spawner.started:
        if p.proc.poll() is None:
            p.kill()
    for p in spawner.started:  # shown when the test failed
        print(f"--- controller pid {p.proc.pid} ---\n{p.log}")


def _transitions(svc: ControlPlane, release_id: str) -> list[EventRecord]:
    return [e for e in svc.audit.events(release_id=release_id, limit=1000) if e.kind != "created"]


def _assert_each_step_once_in_order(events: list[EventRecord]) -> None:
    assert [(e.kind, e.exposure) for e in events] == EXPECTED
    # each 1 s hold is kept: measured from the tick that made a step, which is stamped
    # on its event a transaction later (slower on a busy machine)
    holds = [b.at - a.at for a, b in itertools.pairwise(events[:4])]
    assert all(h >= 0.6 for h in holds), f"a step came before its hold was over: {holds}"


def test_a_killed_controller_continues_where_the_release_was(
    database_url: str, spawn: Spawner
) -> None:
    store = open_store(database_url)
    try:
        svc = ControlPlane(store)
        release = start_release(svc, STRATEGY)

        def n() -> int:
            return len(_transitions(svc, release.id))

        first = spawn(database_url)
        wait_for(lambda: n() >= 1, 20, "the first transition")
        first.kill()
        done = n()
        assert done < len(EXPECTED)

        second = spawn(database_url)
        wait_for(lambda: n() >= done + 2, 20, "two more transitions")
        second.kill()
        assert n() < len(EXPECTED), "killed before the end"

        third = spawn(database_url)
        wait_for(lambda: svc.releases.get(release.id).phase == "promoted", 20, "promoted")
        assert third.terminate() == 0
        assert "controller: stopped" in third.log

        _assert_each_step_once_in_order(_transitions(svc, release.id))
        app = svc.catalog.get_app(release.app)
        assert {f.name: f.current_version for f in app.functions} == {"cart": "v2", "pay": "v2"}
        for p in (first, second, third):
            assert "controller: acquired leadership" in p.log
    finally:
        store.dispose()


def test_a_standby_takes_over_when_the_leader_is_killed(pg_url: str, spawn: Spawner) -> None:
    store = open_store(pg_url)
    try:
        svc = ControlPlane(store)
        a = spawn(pg_url)
        b = spawn(pg_url)
        acquired = "controller: acquired leadership"
        standing_by = "controller: another controller leads; standing by"
        wait_for(
            lambda: (
                (acquired in a.log and standing_by in b.log)
                or (acquired in b.log and standing_by in a.log)
            ),
            20,
            "one leader and one standby",
        )
        leader, standby = (a, b) if acquired in a.log else (b, a)
        assert acquired not in standby.log

        release = start_release(svc, STRATEGY)
        wait_for(lambda: len(_transitions(svc, release.id)) >= 2, 20, "two transitions")
        assert acquired not in standby.log, "the standby did not lead while the leader lived"
        leader.kill()
        before = _transitions(svc, release.id)
        assert all(e.actor.endswith(leader.actor_suffix) for e in before)

        wait_for(lambda: acquired in standby.log, 5, "the standby to take over")
        wait_for(lambda: svc.releases.get(release.id).phase == "promoted", 20, "promoted")
        assert standby.terminate() == 0

        events = _transitions(svc, release.id)
        _assert_each_step_once_in_order(events)
        after = events[len(before) :]
        assert after, "the standby finished the release"
        assert all(e.actor.endswith(standby.actor_suffix) for e in after)
    finally:
        store.dispose()
