"""`coalmine release analysis`, the verdict table in `release status`, and `release status
--watch` in a CI log (plain lines, an exit status per ending), against a real control
plane under uvicorn; the judge's numbers come from the real judge."""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from rich.console import Console

from coalmine.cli.app import run
from coalmine.cli.client import ApiClient
from coalmine.cli.release import latest_run, render_status
from coalmine.cli.verdict import verdict_rows
from coalmine.cli.watch import PAUSED, watch
from coalmine.controller.analysis import combine
from coalmine.controller.plane import ControlPlane
from coalmine.core.analysis import AnalysisSettings
from coalmine.core.gate import evidence_gate
from coalmine.core.histogram import VersionMetrics
from coalmine.core.judge import judge
from coalmine.core.machine import Command, Tick
from coalmine.core.model import Channel
from coalmine.core.tracker import Tracker
from coalmine.web import create_app
from tests.web.conftest import ADMIN_SECRET, bearer, serve
from tests.web.test_discovery import HTTP_DOC

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
UNIX = re.compile(r"\b1[6-9]\d{8}(\.\d+)?\b")


def traffic(channel: str, requests: int, errors: int, ms: float) -> VersionMetrics:
    m = VersionMetrics("shop", "api", "v2" if channel == "canary" else "v1", Channel(channel))
    for i in range(requests):
        m.record(ms * (1 + (i % 7) / 10), error=i < errors)
    return m


def record_run(plane: ControlPlane, rid: str, canary_errors: int) -> str:
    """One analysis run over the real judge's verdicts (api judged, worker idle); the
    tracker's sentence."""
    settings = AnalysisSettings()
    verdicts = {
        "api": judge(
            traffic("canary", 4000, canary_errors, 10.0),
            traffic("stable", 36000, 360, 10.0),
            settings,
            functions=2,
        ),
        "worker": judge(traffic("canary", 0, 0, 1), traffic("stable", 0, 0, 1), settings),
    }
    verdict = combine(verdicts)
    gate = evidence_gate(verdicts, settings)
    tracker = Tracker.start(settings).observe(verdict)
    now = time.time()
    plane.runs.record(
        rid,
        window_start=now - 60,
        window_end=now,
        outcome=verdict.outcome,
        action=tracker.action,
        results={
            "outcome": str(verdict.outcome),
            "reason": verdict.reason,
            "notes": list(verdict.notes),
            "functions": {fn: v.to_dict() for fn, v in verdicts.items()},
            "tracker": tracker.to_dict(),
            "evidence": gate.to_dict(),
        },
        message=tracker.reason,
        evidence=gate.to_dict(),
    )
    return tracker.reason


class Server:
    def __init__(self, base: str, api: httpx.Client, plane: ControlPlane) -> None:
        self.base, self.api, self.plane = base, api, plane

    def start(self, **body: Any) -> str:
        r = self.api.post(
            "/v1/apps/shop/releases",
            json={"candidate": {"api": "v2", "worker": "v2"}, "strategy": "10%:5m, 100%", **body},
        )
        assert r.status_code == 201, r.text
        rid: str = r.json()["id"]
        self.plane.releases.advance(rid, Tick(time.time()))  # started: 10%
        return rid

    def end(self, rid: str) -> None:
        """Roll ``rid`` back if it is still active (one active release per app)."""
        if self.plane.releases.get(rid).phase not in ("promoted", "rolled_back", "failed"):
            self.plane.releases.rollback(rid, "test", "next test")
            self.plane.releases.advance(rid, Tick(time.time()))


@pytest.fixture
def server(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv("COALMINE_BOOTSTRAP_TOKEN", ADMIN_SECRET)
    monkeypatch.setenv("COALMINE_TOKEN", ADMIN_SECRET)
    app = create_app(database_url=sqlite_url)
    with serve(app) as base, httpx.Client(base_url=base, headers=bearer(ADMIN_SECRET)) as api:
        monkeypatch.setenv("COALMINE_URL", base)
        r = api.post("/v1/apply", content=HTTP_DOC, headers={"Content-Type": "application/yaml"})
        assert r.status_code == 200, r.text
        yield Server(base, api, app.state.plane)


def test_release_analysis_is_a_table_per_function_and_metric(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    rid = server.start()
    assert run(["release", "analysis", rid]) == 0
    assert "no analysis run yet" in capsys.readouterr().out
    sentence = record_run(server.plane, rid, canary_errors=40)

    assert run(["release", "analysis", rid]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    rows = [" ".join(line.split()) for line in out.splitlines()]
    assert "function metric canary stable change limit p-value pass/fail" in rows
    api_error = next(r for r in rows if r.startswith("api error_rate "))
    assert api_error.startswith("api error_rate 1% 1% +0 pp +1 pp ")
    assert api_error.endswith(" pass")
    assert any(r.startswith("api latency_p99 ") for r in rows)
    assert "worker - - - - - - not judged" in rows
    assert " ".join(out.split()).count(sentence) == 1, "the sentence once"
    assert ISO.search(out)
    assert not UNIX.search(out), out

    assert run(["release", "analysis", "shop", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["release"], data["phase"]) == (rid, "running")
    assert isinstance(data["run"]["at"], float), "the API's Unix seconds, as they were"
    got = {(row["function"], row["metric"]): row for row in data["rows"]}
    assert got["api", "error_rate"]["canary"] == pytest.approx(1.0)
    assert got["api", "error_rate"]["outcome"] == "pass"
    assert got["worker", None]["outcome"] == "not judged"
    assert len(data["rows"]) == 5, "four metrics of api, one row for idle worker"
    server.end(rid)


def test_release_status_shows_the_table_and_the_sentence_once(server: Server) -> None:
    rid = server.start()
    for errors in (40, 40, 40, 40, 40):
        sentence = record_run(server.plane, rid, canary_errors=errors)
    with ApiClient(server.base, ADMIN_SECRET) as client:
        release = client.get(f"/v1/releases/{rid}")
        events = client.get_all(f"/v1/releases/{rid}/events")
        run_ = latest_run(client, rid)
    assert run_ is not None
    assert len(verdict_rows(run_)) == 5
    console = Console(width=160, record=True, color_system=None)
    console.print(render_status(release, events, run=run_))
    text = console.export_text()
    flat = " ".join(text.split())
    assert flat.count(sentence) == 1, text
    assert "function metric canary stable change limit p-value pass/fail" in flat
    assert "pass, continue (the verdict above)" in flat
    assert ISO.search(text)
    assert not UNIX.search(text), text
    server.end(rid)


def test_a_release_started_with_no_analysis_says_it_is_off(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["release", "start", "shop", "--set", "api=v2", "--no-analysis", "--json"]
    assert run(argv) == 0
    started = json.loads(capsys.readouterr().out)
    assert started["analysis"] == {"enabled": False}
    assert run(["release", "analysis", started["id"]]) == 0
    assert "analysis is off" in capsys.readouterr().out
    server.end(started["id"])


@pytest.mark.parametrize(
    ("ending", "phase", "code"),
    [("promote", "promoted", 0), ("rollback", "rolled_back", 1), ("pause", "paused", PAUSED)],
)
def test_watch_in_a_ci_log_prints_one_plain_line_per_change_and_exits_by_the_ending(
    server: Server, ending: str, phase: str, code: int
) -> None:
    rid = server.start()
    out = io.StringIO()
    got: list[int] = []
    with ApiClient(server.base, ADMIN_SECRET) as client:
        release = client.get(f"/v1/releases/{rid}")

        def follow() -> None:
            got.append(watch(client, release, lambda r, e: "", out=out, plain=True))

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while "started" not in out.getvalue():
            assert time.monotonic() < deadline, out.getvalue()
            time.sleep(0.02)
        for _ in range(3):
            record_run(server.plane, rid, canary_errors=40)  # the same verdict: one line
        if ending == "pause":
            server.plane.releases.operate(rid, Command.PAUSE, "test", "look first")
        elif ending == "promote":
            server.plane.releases.operate(rid, Command.PROMOTE, "test", "")
            server.plane.releases.advance(rid, Tick(time.time() + 1))
        else:
            server.plane.releases.rollback(rid, "test", "p99 doubled")
            server.plane.releases.advance(rid, Tick(time.time() + 1))
        thread.join(15)
    assert not thread.is_alive(), out.getvalue()
    assert got == [code]
    lines = out.getvalue().splitlines()
    assert "\x1b" not in out.getvalue()
    assert all(ISO.match(line) for line in lines[:-1]), lines
    assert [line.split()[1] for line in lines[:-1]] == [rid] * (len(lines) - 1)
    assert sum(" analysis (judge) " in line for line in lines) == 1, lines
    assert any(" started (" in line for line in lines), lines
    assert lines[-1].startswith(f"{rid} {phase} at ")
    assert lines[-1].endswith(f"(exit {code})")
    server.end(rid)


def test_watch_exit_status_through_the_command(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    rid = server.start()
    server.plane.releases.rollback(rid, "test", "p99 doubled")
    server.plane.releases.advance(rid, Tick(time.time() + 1))
    assert run(["release", "status", rid, "--watch"]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert out.splitlines()[-1] == f"{rid} rolled_back at 0%: p99 doubled (exit 1)"
