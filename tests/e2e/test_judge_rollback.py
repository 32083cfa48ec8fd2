"""The judge end to end: a bad canary is rolled back by itself, a healthy one is promoted.

The real control plane (uvicorn in a thread), the real rollout controller
(its own thread, analysis inside its tick) and a real gateway running local
handlers. Many users call the gateway all along; the gateway records every
call per version and channel and flushes the counts to the control plane
twice a second; the judge compares canary with stable every second.

- a candidate 15x slower (30 ms against 2 ms) is rolled back by the judge,
  the events naming the latency metric;
- a candidate that fails 20% of its calls is rolled back, the events naming
  the error rate;
- a candidate whose upstream hangs (accepts connections, never answers) is
  answered 504 by the gateway once its timeout passes, and the judge counts
  those 504s as the version's errors and rolls it back;
- a healthy candidate passes its analyses at every step and is promoted.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coalmine.controller.leader import SoleLeadership
from coalmine.controller.loop import Controller
from coalmine.controller.schemas import AppSpec, ReleaseCreate, VersionCreate
from coalmine.core.records import EventRecord
from tests.controller import NoHooks
from tests.e2e.dataplane import GatewayServer
from tests.sdk import ControlPlane

pytestmark = pytest.mark.slow

APP = "judged"
USERS = [f"user-{i}" for i in range(400)]
SPEC: dict[str, Any] = {
    "app": APP,
    "functions": {
        "api": {
            "current": "v1",
            "versions": {
                "v1": "tests.e2e.judge_fns:v1",
                "v2": "tests.e2e.judge_fns:v2_slow",
                "v3": "tests.e2e.judge_fns:v3_failing",
                "v4": "tests.e2e.judge_fns:v4_healthy",
            },
        },
        # nobody calls it: released with api, it must not hold api's release
        "notify": {
            "current": "v1",
            "versions": {"v1": "tests.e2e.judge_fns:v1", "v2": "tests.e2e.judge_fns:v4_healthy"},
        },
    },
}
GATEWAY_TIMEOUT = 0.5
ANALYSIS: dict[str, Any] = {
    "interval": "1s",
    "min_requests": 40,
    "failure_limit": 2,
    "max_inconclusive": 30,
    "inconclusive": "continue",
    # the healthy candidate runs the same code as stable: generous latency limits keep
    # a loaded machine's jitter from failing it; a 15x slower candidate is far beyond them
    "metrics": {
        "latency_p50": {"max_increase_pct": 50},
        "latency_p95": None,
        "latency_p99": {"max_increase_pct": 300},
    },
}


class HangingUpstream:
    """An HTTP upstream that accepts every connection and never answers on it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.accepted = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.held.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


class Load:
    """Threads calling the gateway as random users until stopped; counts answers by version."""

    def __init__(self, url: str, threads: int = 6) -> None:
        self.url = url
        self.stop = threading.Event()
        self.seen: Counter[tuple[str, int]] = Counter()
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self.stop.is_set():
                user = rng.choice(USERS)
                try:
                    r = http.get("/api/", headers={"x-user-id": user})
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.failures.append(repr(exc))
                    continue
                with self._lock:
                    self.seen[r.headers.get("x-coalmine-version", "?"), r.status_code] += 1

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(10)


class Stack:
    def __init__(self, plane: ControlPlane, controller: Controller, load: Load) -> None:
        self.plane, self.controller, self.load = plane, controller, load

    def release(
        self,
        version: str,
        strategy: str,
        *,
        more: dict[str, str] | None = None,
        analysis: dict[str, Any] | None = None,
    ) -> str:
        rel = self.plane.service.releases.start(
            APP,
            ReleaseCreate(
                candidate={"api": version, **(more or {})},
                strategy=strategy,
                analysis=ANALYSIS if analysis is None else analysis,
            ),
            "e2e",
        )
        self.controller.wake()
        return rel.id

    def wait_phase(self, release_id: str, phases: set[str], timeout: float) -> str:
        """Poll the release (its phase is store state, no event to wait on) until it ends."""
        deadline = time.monotonic() + timeout
        while True:
            phase = self.plane.service.releases.get(release_id).phase
            if phase in phases:
                return phase
            if time.monotonic() > deadline:
                runs = self.plane.service.runs.of_release(release_id)
                last = runs[-1].results.get("reason") if runs else "no analysis run"
                pytest.fail(f"{release_id} still {phase} after {timeout}s; last analysis: {last}")
            time.sleep(0.05)

    def events(self, release_id: str) -> list[EventRecord]:
        return self.plane.service.audit.events(release_id=release_id, limit=1000)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    db = tmp_path_factory.mktemp("judge") / "coalmine.db"
    plane = ControlPlane(f"sqlite:///{Path(db)}")
    plane.start()
    plane.service.catalog.apply(AppSpec.model_validate(SPEC), "e2e")
    gateway = GatewayServer(
        plane, plane.sdk_key(APP), app=APP, metrics_interval=0.5, timeout=GATEWAY_TIMEOUT
    ).start()
    assert plane.app is not None
    controller = Controller(
        plane.service,
        feed=plane.app.state.feed,
        leadership=SoleLeadership(),
        hooks=NoHooks(),
        interval=0.25,
        actor="e2e-controller",
    )
    controller.start()
    try:
        with Load(gateway.url) as load:
            yield Stack(plane, controller, load)
        assert not load.failures[:5], "every call through the gateway was answered"
    finally:
        controller.stop()
        gateway.stop()
        plane.stop()


def rollback_events(stack: Stack, release_id: str) -> tuple[EventRecord, EventRecord]:
    events = stack.events(release_id)
    [rolling] = [e for e in events if e.kind == "rolling_back"]
    [rolled] = [e for e in events if e.kind == "rolled_back"]
    assert rolling.actor == "judge"
    assert [e.kind for e in events][:2] == ["created", "started"]
    assert "analysis" in [e.kind for e in events[: events.index(rolling)]]
    return rolling, rolled


def test_a_slower_candidate_is_rolled_back_by_the_judge(stack: Stack) -> None:
    rid = stack.release("v2", "20%:30s, 100%")
    assert stack.wait_phase(rid, {"rolled_back", "promoted", "paused"}, 25) == "rolled_back"
    rolling, rolled = rollback_events(stack, rid)
    assert rolling.message.startswith(
        "rolling back: canary failed analysis for 2 consecutive intervals: api latency_p"
    )
    assert "canary p50" in rolling.message or "canary p99" in rolling.message
    assert rolled.message.startswith("rolled back: canary failed analysis")
    assert "latency_p" in rolled.message
    runs = stack.plane.service.runs.of_release(rid)
    assert [r.action for r in runs][-1] == "rollback"
    assert runs[-1].results["functions"]["api"]["canary_requests"] >= ANALYSIS["min_requests"]
    assert stack.load.seen["v2", 200] > 0, "the canary was served"


def test_a_failing_candidate_is_rolled_back_by_the_judge(stack: Stack) -> None:
    rid = stack.release("v3", "20%:30s, 100%")
    assert stack.wait_phase(rid, {"rolled_back", "promoted", "paused"}, 25) == "rolled_back"
    rolling, rolled = rollback_events(stack, rid)
    assert "api error_rate: canary errors" in rolling.message
    assert "api error_rate" in rolled.message
    assert stack.load.seen["v3", 500] > 0


def test_a_candidate_whose_upstream_hangs_times_out_and_is_rolled_back(stack: Stack) -> None:
    hanging = HangingUpstream()
    try:
        stack.plane.service.catalog.register_version(
            APP, "api", VersionCreate(name="v5", target=hanging.url), "e2e"
        )
        rid = stack.release("v5", "20%:30s, 100%")
        assert stack.wait_phase(rid, {"rolled_back", "promoted", "paused"}, 30) == "rolled_back"
        assert hanging.accepted.is_set(), "the gateway did call the hanging upstream"
    finally:
        hanging.close()
    rolling, _ = rollback_events(stack, rid)
    assert "api error_rate: canary errors" in rolling.message
    # its calls ended as the gateway's 504 (502 once the upstream closed, after the
    # verdict), never as an answer
    assert stack.load.seen["v5", 504] > 0
    assert stack.load.seen["v5", 200] == 0
    runs = stack.plane.service.runs.of_release(rid)
    canary = runs[-1].results["functions"]["api"]
    assert canary["canary_requests"] >= ANALYSIS["min_requests"], canary


def test_a_healthy_candidate_is_judged_at_every_step_and_promoted(stack: Stack) -> None:
    rid = stack.release("v4", "20%:4s, 50%:4s, 100%")
    assert stack.wait_phase(rid, {"rolled_back", "promoted", "paused"}, 30) == "promoted"
    runs = stack.plane.service.runs.of_release(rid)
    assert "rollback" not in [r.action for r in runs]
    assert sum(r.outcome == "pass" for r in runs) >= 2, [r.results["reason"] for r in runs]
    kinds = [e.kind for e in stack.events(rid)]
    assert kinds.index("analysis") < kinds.index("step") < kinds.index("promoting")
    judged_at_50 = kinds[kinds.index("step") : kinds.index("promoting")]
    assert "analysis" in judged_at_50, "judged again after the exposure was raised"
    app = stack.plane.service.catalog.get_app(APP)
    assert {f.name: f.current_version for f in app.functions}["api"] == "v4"
    assert stack.load.seen["v4", 200] > 0


def test_a_function_nobody_calls_does_not_hold_the_release(stack: Stack) -> None:
    """notify serves no call in either channel: it is not judged, and api's evidence
    (waited for: ``inconclusive`` and ``idle`` are ``pause``) promotes both."""
    analysis = {
        "interval": "1s",
        "min_requests": 40,
        "max_inconclusive": 30,
        "metrics": {
            "error_rate": {"max_increase_pp": 5},
            "latency_p50": {"max_increase_pct": 100},
            "latency_p95": None,
            "latency_p99": None,
        },
    }
    before = {f.name: f.current_version for f in stack.plane.service.catalog.get_app(APP).functions}
    api = "v1" if before["api"] != "v1" else "v4"
    rid = stack.release(api, "50%:2s, 100%", more={"notify": "v2"}, analysis=analysis)
    assert stack.wait_phase(rid, {"rolled_back", "promoted", "paused"}, 60) == "promoted"
    runs = stack.plane.service.runs.of_release(rid)
    last = runs[-1].results
    assert last["functions"]["notify"]["idle"] is True
    assert last["functions"]["api"]["idle"] is False
    assert last["evidence"]["idle"] == ["notify"]
    assert any(n.startswith("notify: not judged: no call in either channel") for n in last["notes"])
    app = stack.plane.service.catalog.get_app(APP)
    assert {f.name: f.current_version for f in app.functions} == {"api": api, "notify": "v2"}
