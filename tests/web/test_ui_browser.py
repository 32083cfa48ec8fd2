"""The dashboard in a real browser: headless Chromium against a running control plane and a
running gateway with a live release and users calling through the gateway.

The page shows the release and the chain, its charts get data points from the gateway's
metrics, it follows the app's routing stream (a pause made elsewhere shows without a poll),
and the rollback button rolls the release back: the page shows it within a second of the
click, measured inside the page. A screenshot goes to test-artifacts/ui-release.png.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coalmine.controller.schemas import AppSpec, ReleaseCreate
from coalmine.core.machine import Tick
from coalmine.web import create_app
from tests.e2e.dataplane import GatewayServer
from tests.sdk import ControlPlane
from tests.web.cdp import Page, browser, chromium_binary
from tests.web.conftest import ADMIN_SECRET, Web, serve

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
APP = "judged"
SPEC: dict[str, Any] = {
    "app": APP,
    "functions": {
        "api": {
            "current": "v1",
            "versions": {"v1": "tests.e2e.judge_fns:v1", "v4": "tests.e2e.judge_fns:v4_healthy"},
        }
    },
}
# The browser records when the rollback button is clicked and when the page first shows the
# release rolled back (or rolling back), on the page's own clock.
_TIMING = """(() => {
  window.__t = {};
  document.addEventListener('click', function (ev) {
    if (ev.target.closest('button.op[data-op="rollback"]')) { window.__t.click = performance.now(); }
  }, true);
  new MutationObserver(function () {
    const s = document.querySelector('section.release');
    if (s && window.__t.click !== undefined && window.__t.shown === undefined &&
        ['rolling_back', 'rolled_back'].includes(s.dataset.phase)) {
      window.__t.shown = performance.now();
    }
  }).observe(document.getElementById('view'), {childList: true, subtree: true});
})()"""


class Traffic:
    """Threads calling the gateway as random users until stopped."""

    def __init__(self, url: str, threads: int = 3) -> None:
        self.url = url
        self.stop = threading.Event()
        self.answers: list[int] = []
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self.stop.is_set():
                try:
                    r = http.get("/api/", headers={"x-user-id": f"user-{rng.randrange(500)}"})
                except httpx.HTTPError:
                    continue
                self.answers.append(r.status_code)

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(10)


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    plane = ControlPlane(f"sqlite:///{tmp_path / 'coalmine.db'}")
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


def _points(page: Page, selector: str) -> int:
    """The data points of the first chart line ``selector`` names (0 when there is none)."""
    return int(
        page.evaluate(
            f"(() => {{ const l = document.querySelector({json.dumps(selector)});"
            " return l ? Number(l.dataset.points) : 0; })()"
        )
    )


def test_a_live_release_with_traffic_is_shown_and_rolled_back_from_the_dashboard(
    plane: ControlPlane, tmp_path: Path
) -> None:
    chromium_binary()
    plane.service.catalog.apply(AppSpec.model_validate(SPEC), "e2e")
    deployer = plane.tokens.create("ui-deployer", "deployer").token
    rel = plane.service.releases.start(
        APP, ReleaseCreate(candidate={"api": "v4"}, strategy="50%:1h, 100%"), "e2e"
    )
    rid = rel.id
    assert plane.service.releases.advance(rid, Tick(time.time() + 1)) is not None
    assert str(plane.service.releases.get(rid).phase) == "running"
    gateway = GatewayServer(plane, plane.sdk_key(APP), app=APP, metrics_interval=0.5).start()
    try:
        with Traffic(gateway.url) as traffic, browser(tmp_path / "profile") as page:
            page.call("Page.navigate", url=f"{plane.url}/ui#/releases/{rid}")
            page.wait_for(
                "document.readyState === 'complete' && document.getElementById('token-form')",
                20,
            )
            # the shell is public and holds nothing until a token is entered
            assert APP not in page.evaluate("document.getElementById('view').innerText")
            page.type_into("#token", deployer)
            page.click("#token-save")
            section = f'section.release[data-release="{rid}"]'
            page.wait_for(f"document.querySelector('{section}')", 20)
            assert page.evaluate("sessionStorage.getItem('coalmine-token')") == deployer
            assert page.evaluate("document.documentElement.outerHTML").count(deployer) == 0
            assert page.evaluate(f"document.querySelector('{section}').dataset.phase") == "running"
            assert "50%" in page.evaluate("document.querySelector('b.exposure').innerText")
            chain = page.evaluate(
                "[...document.querySelectorAll('table.chain tr.changed td')].map(td => td.innerText)"
            )
            assert chain == ["api", "v1", "v4"]

            # the page follows the app's routing stream, with the token in a header
            page.wait_for("document.getElementById('live').dataset.mode === 'live'", 20)
            # the gateway's traffic reaches the charts: both channels, every quantile, and the
            # error rate, each a line of at least two points (two of the gateway's windows)
            page.wait_for(
                "['canary', 'stable'].every(side => ['', '.p50', '.p95', '.p99'].every(q => {"
                " const l = document.querySelector('polyline.line.' + side + q);"
                " return l && Number(l.dataset.points) >= 2; }))",
                60,
            )
            assert _points(page, "polyline.line.canary.p99") >= 2
            assert _points(page, "polyline.line.stable.p99") >= 2
            dots = page.evaluate("document.querySelectorAll('svg.chart circle.dot.canary').length")
            assert dots >= 8  # a dot per point: error rate and three quantiles, two points each
            assert page.evaluate("document.querySelectorAll('svg.chart circle.point').length") >= 2
            assert traffic.answers.count(200) > 0

            # a pause made elsewhere arrives over the stream (live mode polls only every 5 s)
            events = int(page.evaluate("document.getElementById('live').dataset.events"))
            r = httpx.post(
                f"{plane.url}/v1/releases/{rid}/pause",
                json={"reason": "look closer"},
                headers={"Authorization": f"Bearer {deployer}"},
            )
            assert r.status_code == 200, r.text
            page.wait_for(f"document.querySelector('{section}').dataset.phase === 'paused'", 10)
            assert int(page.evaluate("document.getElementById('live').dataset.events")) > events

            page.evaluate(_TIMING)
            page.click('button.op[data-op="rollback"]')
            page.wait_for("window.__t.shown !== undefined", 10)
            took_ms = float(page.evaluate("window.__t.shown - window.__t.click"))
            assert str(plane.service.releases.get(rid).phase) in ("rolling_back", "rolled_back")
            page.wait_for("document.querySelectorAll('li.event.alert').length >= 1", 5)
            page.wait_for("document.querySelector('g.marker.rollback')", 5)
            page.screenshot(ARTIFACTS / "ui-release.png")
    finally:
        gateway.stop()
    assert (ARTIFACTS / "ui-release.png").stat().st_size > 1000
    (ARTIFACTS / "ui-rollback.json").write_text(json.dumps({"click_to_shown_ms": took_ms}))
    assert took_ms <= 1000, f"the page showed the rollback {took_ms:.0f} ms after the click"


def test_the_api_docs_render_offline(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Swagger UI and ReDoc render from the control plane's own assets: every resource the
    browser loaded came from the control plane, and its policy blocked the rest."""
    chromium_binary()
    monkeypatch.setenv("COALMINE_BOOTSTRAP_TOKEN", ADMIN_SECRET)
    app = create_app(database_url=sqlite_url, public_docs=True)
    with serve(app) as base, browser(tmp_path / "profile") as page:
        page.call("Page.enable")
        page.call(
            "Page.addScriptToEvaluateOnNewDocument",
            source="window.__blocked = []; document.addEventListener('securitypolicyviolation',"
            " e => window.__blocked.push(e.effectiveDirective + ' ' + e.blockedURI));",
        )
        for path, rendered in (
            ("/docs", "document.querySelector('.swagger-ui .info .title')"),
            ("/redoc", "document.querySelector('.api-content h1')"),
        ):
            page.call("Page.navigate", url=f"{base}{path}")
            page.wait_for(f"{rendered} && {rendered}.innerText.includes('coalmine')", 30)
            loaded = page.evaluate(
                "performance.getEntriesByType('resource').map(e => e.name).concat([location.href])"
            )
            assert any(u.endswith("/openapi.json") for u in loaded), loaded
            # the policy blocks what would leave the machine (ReDoc's Redocly logo): the
            # browser lists it as a resource, but never sent it
            blocked = page.evaluate("window.__blocked")
            assert set(blocked) <= {"img-src https://cdn.redoc.ly/redoc/logo-mini.svg"}, blocked
            page.wait_for(
                "performance.getEntriesByType('resource').every(e =>"
                f" e.name.startsWith({json.dumps(base + '/')})"
                " || window.__blocked.includes('img-src ' + e.name))",
                5,
            )


@pytest.mark.parametrize("path", ["/ui", "/ui/ui.js"])
def test_shell_and_script_need_no_token(sqlite_web: Web, path: str) -> None:
    assert sqlite_web.client.get(path).status_code == 200
