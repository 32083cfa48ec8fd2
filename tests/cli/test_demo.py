"""`coalmine demo`: every claim of its three scenes, run as a user runs it, and that it cleans up.

Each run is the real command in a subprocess (control plane, controller,
gateway, stream, consumer and users in that one process), with its own
``TMPDIR`` so that the test can see the temporary directory is gone, and a
marker in its environment so that the test can see no process of it is left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from examples.food_ordering import notify_user_v1, notify_user_v2, place_order_v1

from tests.services import child_env, fresh_pg_database, need

ROOT = Path(__file__).resolve().parents[2]
COMMAND = [sys.executable, "-m", "coalmine.cli", "demo"]
RUN_TIMEOUT = 150  # the demo itself takes under a minute on an idle 2-core machine


@dataclass
class Run:
    tmp: Path
    marker: str

    def env(self) -> dict[str, str]:
        self.tmp.mkdir(exist_ok=True)
        return child_env(TMPDIR=str(self.tmp), COALMINE_DEMO_TEST_MARKER=self.marker)

    def processes_left(self) -> list[int]:
        """Processes whose environment holds this run's marker."""
        found = []
        needle = f"COALMINE_DEMO_TEST_MARKER={self.marker}".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if needle in environ.split(b"\0"):
                found.append(int(entry.name))
        return found

    def assert_clean(self) -> None:
        assert list(self.tmp.iterdir()) == [], "the demo left files in its temporary directory"
        assert self.processes_left() == [], "a process of the demo is still running"


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    r = Run(tmp_path / "tmp", uuid.uuid4().hex)
    yield r
    for pid in r.processes_left():  # never leave one behind, even when a test failed
        os.kill(pid, signal.SIGKILL)


def demo_json(run: Run, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [*COMMAND, "--json", *args],
        cwd=ROOT,
        env=run.env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"--json prints one object and nothing else: {proc.stdout[:500]}"
    result: dict[str, Any] = json.loads(lines[0])
    run.assert_clean()
    return result


def check_claims(result: dict[str, Any]) -> None:
    """What the README and docs/demo.md say the three scenes show."""
    request, user, slow = result["request_mode"], result["user_mode"], result["slow_canary"]
    # 1. a weighted alias at 10% meets most users and breaks chains that mix versions
    assert request["exposed_user_fraction"] > 0.3, request
    assert request["mixed_chain_failures"] > 0, request
    # 2. coalmine at 10% meets about one user in ten, never mixes, is judged and promoted
    assert 0.04 <= user["exposed_user_fraction"] <= 0.18, user
    assert user["mixed_chain_failures"] == 0, user
    assert user["mixed_chains"] == 0, user
    assert user["outcome"] == "promoted", user
    assert "pass" in user["verdicts"], user
    assert "fail" not in user["verdicts"], user
    # 3. the slower tail is caught by the judge and rolled back
    assert slow["outcome"] == "rolled_back", slow
    assert "latency_p" in slow["reason"], slow["reason"]
    assert 0 < slow["seconds_to_rollback"] <= 75, slow
    # the judge's own numbers (the gateway's per-version histograms) say the tail, not the
    # median, moved; what the users measured carries the machine's noise (a loaded CI
    # machine once put stable's p99 at 213 ms), so it is checked for direction only
    judged = re.search(r"canary p99 ([\d,.]+) ms vs stable ([\d,.]+) ms", slow["reason"])
    assert judged is not None, slow["reason"]
    canary_p99, stable_p99 = (float(g.replace(",", "")) for g in judged.groups())
    assert canary_p99 > 1.3 * stable_p99, slow["reason"]  # v3: about 2x; the limit +50%
    p50, p99 = slow["p50_ms"], slow["p99_ms"]
    assert p99["canary"] > p99["stable"], slow
    assert abs(p50["canary"] - p50["stable"]) < 0.3 * p50["stable"], slow
    assert result["seconds"] < RUN_TIMEOUT


# fast: the example app's functions and the command's own errors ------------------------


def http_event(body: str, user: str | None = "u-1") -> dict[str, Any]:
    return {
        "version": "2.0",
        "requestContext": {"http": {"method": "POST"}},
        "headers": {"x-user-id": user} if user else {},
        "body": body,
        "isBase64Encoded": False,
    }


@pytest.mark.parametrize(
    ("body", "user", "message"),
    [
        ("{}", "u-1", "needs an 'id'"),
        ("not json", "u-1", "must be a JSON order"),
        ('{"id": "o-1", "items": "pizza"}', "u-1", "'items' must be a list"),
        ('{"id": "o-1"}', None, "x-user-id"),
    ],
)
def test_place_order_answers_400_to_a_bad_order(body: str, user: str | None, message: str) -> None:
    answer = place_order_v1.handler(http_event(body, user))
    assert answer["statusCode"] == 400
    assert message in json.loads(answer["body"])["error"]


def test_notify_user_reads_the_event_from_a_stream_or_a_request_body() -> None:
    v1_event = {"type": "order_placed", "order_id": "o-7", "user": "u-1"}
    assert notify_user_v1.handler(v1_event)["message"] == "order o-7 placed"
    answer = notify_user_v1.handler(http_event(json.dumps(v1_event)))
    assert answer["statusCode"] == 200
    assert json.loads(answer["body"])["message"] == "order o-7 placed"
    with pytest.raises(KeyError, match="delivery_eta"):  # the article's failure
        notify_user_v2.handler(v1_event)
    assert notify_user_v2.handler(http_event("[1]"))["statusCode"] == 400


def test_a_missing_example_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*COMMAND, "--json", "--app-dir", str(tmp_path)],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("coalmine: error: examples/food_ordering/coalmine.yaml is not in")


def test_help_says_when_it_stays_up() -> None:
    proc = subprocess.run(
        [*COMMAND, "--help"], env=child_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    assert "--no-stay" in proc.stdout
    assert "Ctrl-C" in proc.stdout


# the demo itself -------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_shows_every_claim(run: Run) -> None:
    result = demo_json(run)
    check_claims(result)
    assert result["functions"] == "local"
    assert result["stream"] == "in memory"
    assert result["store"].startswith("sqlite:///")


@pytest.mark.slow
def test_demo_with_lambda_functions(run: Run) -> None:
    result = demo_json(run, "--lambda", "--seed", "2")
    check_claims(result)
    assert result["functions"] == "lambda"


@pytest.mark.slow
def test_demo_on_postgresql_and_nats(run: Run) -> None:
    need("nats")
    with fresh_pg_database() as url:
        result = demo_json(run, "--database-url", url, "--nats-url", "nats://127.0.0.1:4222")
        engine = sqlalchemy.create_engine(url)
        try:
            with engine.connect() as db:
                tokens = db.execute(
                    sqlalchemy.text("SELECT name, role, revoked_at FROM tokens")
                ).all()
        finally:
            engine.dispose()
    # the store outlives the demo: its sdk key is revoked, and its admin token too unless it
    # is the store's only one (the store keeps one admin)
    demo = [t for t in tokens if t.name.startswith("demo-")]
    assert {t.role for t in demo} == {"admin", "sdk"}, tokens
    sdk = [t for t in demo if t.role == "sdk"]
    assert all(t.revoked_at is not None for t in sdk), sdk
    others = [t for t in tokens if t.role == "admin" and not t.name.startswith("demo-")]
    if others:
        assert all(t.revoked_at is not None for t in demo), tokens
    check_claims(result)
    assert result["store"].startswith("postgresql+psycopg://")
    assert result["stream"].startswith("NATS JetStream")


@pytest.mark.slow
def test_ctrl_c_while_a_scene_runs_stops_everything(run: Run) -> None:
    proc = subprocess.Popen(
        [*COMMAND, "--no-stay"],
        cwd=ROOT,
        env=run.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        seen = []
        for line in proc.stdout:  # the scene's own lines: it is running
            seen.append(line)
            if "started: traffic shifted" in line or time.monotonic() > deadline:
                break
        assert any("Scene 1" in s for s in seen), "".join(seen)
        assert list(run.tmp.iterdir()), "the running demo has its temporary directory"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    run.assert_clean()
