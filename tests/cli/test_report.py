"""`coalmine report` against a real control plane under uvicorn: PNG, SVG, HTML, bad input."""

from __future__ import annotations

import re
import shlex
import struct
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from coalmine.cli.app import run
from coalmine.core.machine import Tick
from coalmine.core.tracker import Action
from coalmine.core.verdict import MetricResult, Outcome, Verdict
from coalmine.web import create_app
from tests.test_docs import ROOT
from tests.web.conftest import ADMIN_SECRET, bearer, serve
from tests.web.test_discovery import HTTP_DOC

pytest.importorskip("matplotlib")

REASON = "<script>alert('x')</script> p99 too high"


def _verdict(outcome: Outcome, canary_p99: float, canary_err: float) -> Verdict:
    metrics = (
        MetricResult("error_rate", outcome, "errors", canary=canary_err, stable=0.5),
        MetricResult("latency_p99", outcome, "p99", canary=canary_p99, stable=120.0),
    )
    return Verdict(outcome, metrics, ("p99 <b>up</b>",), (), 500, 4500)


@pytest.fixture
def rolled_back(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """shop's release stepped 10% -> 30%, two judge runs, then rolled back; (URL, release id)."""
    monkeypatch.setenv("COALMINE_BOOTSTRAP_TOKEN", ADMIN_SECRET)
    monkeypatch.setenv("COALMINE_TOKEN", ADMIN_SECRET)
    app = create_app(database_url=sqlite_url)
    with serve(app) as base, httpx.Client(base_url=base, headers=bearer(ADMIN_SECRET)) as api:
        monkeypatch.setenv("COALMINE_URL", base)
        r = api.post("/v1/apply", content=HTTP_DOC, headers={"Content-Type": "application/yaml"})
        assert r.status_code == 200, r.text
        r = api.post(
            "/v1/apps/shop/releases",
            json={"candidate": {"api": "v2"}, "strategy": "10%:5m, 30%:5m, 100%"},
        )
        assert r.status_code == 201, r.text
        rid = r.json()["id"]
        plane = app.state.plane
        plane.releases.advance(rid, Tick(time.time() + 1e6))
        plane.releases.advance(rid, Tick(time.time() + 2e6))
        assert api.get(f"/v1/releases/{rid}").json()["exposure"] == 3000
        for outcome, p99, err in ((Outcome.PASS, 125.0, 0.6), (Outcome.FAIL, 480.0, 4.0)):
            now = time.time()
            plane.runs.record(
                rid,
                window_start=now - 60,
                window_end=now,
                outcome=outcome,
                action=Action.CONTINUE if outcome is Outcome.PASS else Action.ROLLBACK,
                results={
                    "outcome": str(outcome),
                    "reason": f"{outcome}: {REASON}",
                    "functions": {"api": _verdict(outcome, p99, err).to_dict()},
                },
                message=str(outcome),
            )
        r = api.post(f"/v1/releases/{rid}/rollback", json={"reason": REASON})
        assert r.status_code < 300, r.text
        plane.releases.advance(rid, Tick(time.time() + 3e6))
        yield base, rid


def test_png(rolled_back: tuple[str, str], tmp_path: Path) -> None:
    _, rid = rolled_back
    out = tmp_path / "r.png"
    assert run(["report", rid, "--out", str(out)]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind, width, height = struct.unpack(">I4sII", data[8:24])
    assert (length, kind) == (13, b"IHDR")
    assert 600 <= width <= 3000, width
    assert 400 <= height <= 3000, height
    from matplotlib.image import imread

    pixels = imread(str(out))
    assert pixels.std() > 0.01, "the image is not blank"


def test_svg_has_the_markers(rolled_back: tuple[str, str], tmp_path: Path) -> None:
    _, rid = rolled_back
    out = tmp_path / "r.svg"
    assert run(["report", rid, "--out", str(out)]) == 0
    root = ET.parse(out).getroot()
    texts = {"".join(t.itertext()).strip() for t in root.iter("{http://www.w3.org/2000/svg}text")}
    for label in ("start 10%", "step 30%", "rollback", "rolled back"):
        assert label in texts, (label, sorted(texts))
    assert "api v2 (canary)" in texts
    assert "api v1 (stable)" in texts
    assert "latency_p99 (ms)" in texts


def test_html_escapes_every_value(rolled_back: tuple[str, str], tmp_path: Path) -> None:
    _, rid = rolled_back
    out = tmp_path / "r.html"
    assert run(["report", rid, "-o", str(out)]) == 0
    page = out.read_text()
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; p99 too high" in page
    assert "<svg" in page
    assert "src=" not in page, "self-contained: nothing to load"
    assert 'href="http' not in page
    assert page.count("<tr><td>") == 2, "one row per judge run"
    assert page.count("<tr class='m'>") == 4, "a row per run and metric"
    assert "<td>480</td><td>120</td>" in page, "the failing run's canary and stable p99"
    assert "fail" in page
    assert "rollback" in page


def test_unknown_release_is_one_line_exit_2(
    rolled_back: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.png"
    assert run(["report", "nope-7", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "nope-7" in err[0]
    assert not out.exists()


def test_bad_suffix_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.pdf"
    assert run(["report", "shop-1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert ".png, .svg or .html" in err[0]
    assert not out.exists()


def test_series_in_seconds_since_the_first_event() -> None:
    from coalmine.cli.report_chart import series

    t0 = 1_800_000_000.0
    release = {"id": "shop-1", "baseline": {"api": "v1"}, "candidate": {"api": "v2"}}
    events = [
        {"at": t0, "kind": "created", "exposure": 0},
        {"at": t0 + 5, "kind": "started", "exposure": 1000},
        {"at": t0 + 65, "kind": "analysis", "exposure": 1000},
        {"at": t0 + 300, "kind": "step", "exposure": 3000},
        {"at": t0 + 420, "kind": "rolling_back", "exposure": 3000},
        {"at": t0 + 421, "kind": "rolled_back", "exposure": 0},
    ]
    runs = [
        {
            "window_end": t0 + 360,
            "outcome": "fail",
            "action": "rollback",
            "results": {
                "reason": "r",
                "functions": {"api": _verdict(Outcome.FAIL, 1, 2).to_dict()},
            },
        }
    ]
    s = series(release, events, runs)
    assert s.end == 421
    assert s.exposure == [(0, 0), (5, 10), (300, 30), (421, 0)]
    assert [(t, label) for t, label, _ in s.markers] == [
        (5, "start 10%"),
        (300, "step 30%"),
        (420, "rollback"),
        (421, "rolled back"),
    ]
    assert s.metrics["latency_p99"] == {
        "api v2 (canary)": [(360, 1)],
        "api v1 (stable)": [(360, 120)],
    }
    assert s.verdicts == [{"t": 360, "outcome": "fail", "action": "rollback", "reason": "r"}]


def test_without_matplotlib_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an uninstalled package looks like
    assert run(["report", "shop-1", "--out", str(tmp_path / "r.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "pip install 'coalmine[report]'" in err[0]


def test_the_docs_block_runs(
    rolled_back: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every command of the sh block under docs/control-plane.md's "## Reports" runs."""
    page = (ROOT / "docs" / "control-plane.md").read_text(encoding="utf-8")
    section = page.split("## Reports\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```sh\n(.*?)^```", section, re.S | re.M)
    assert block is not None
    monkeypatch.chdir(tmp_path)
    # the page's app is food-ordering (tests/test_docs.py runs it so); this release is shop's
    text = block.group(1).replace("food-ordering", "shop")
    commands = [shlex.split(line, comments=True) for line in text.splitlines()]
    assert len(commands) == 3
    for argv in commands:
        assert argv[0] == "coalmine"
        assert run(argv[1:]) == 0, argv
        out = tmp_path / argv[argv.index("--out") + 1]
        assert out.stat().st_size > 1000, out


def test_names_in_the_svg_are_escaped_too() -> None:
    from coalmine.cli.report_chart import html_page, series

    evil = "<img src=x onerror=alert(1)>$x$"
    release = {
        "id": evil,
        "phase": evil,
        "reason": evil,
        "baseline": {evil: evil},
        "candidate": {evil: "v2"},
        "changed": [evil],
    }
    events = [{"at": 1.0, "kind": "started", "exposure": 1000}]
    runs = [
        {
            "window_end": 2.0,
            "outcome": evil,
            "action": evil,
            "results": {
                "reason": evil,
                "functions": {evil: _verdict(Outcome.PASS, 1, 2).to_dict()},
            },
        }
    ]
    page = html_page(series(release, events, runs))
    assert "<img" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;$x$" in page
