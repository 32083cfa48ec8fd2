"""The dashboard in a real browser: headless Chromium against a running control plane with a
live release; the page shows it, its chart has points, and the rollback button rolls it back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from coalmine.core.machine import Tick
from tests.web.cdp import browser, chromium_binary
from tests.web.conftest import Web, serve

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def test_rollback_from_the_dashboard(sqlite_web: Web, tmp_path: Path) -> None:
    chromium_binary()
    web = sqlite_web
    web.apply()
    r = web.client.post(
        "/v1/apps/shop/releases", json={"candidate": {"api": "v2"}}, headers=web.as_("deployer")
    )
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    assert web.service.releases.advance(rid, Tick(time.time() + 1e6)) is not None

    with serve(web.app) as base, browser(tmp_path / "profile") as page:
        page.call("Page.navigate", url=f"{base}/ui#/releases/{rid}")
        page.wait_for(
            "document.readyState === 'complete' && document.getElementById('token-form') !== null",
            20,
        )
        # nothing is shown before a token is entered
        assert "shop" not in page.evaluate("document.getElementById('view').innerText")
        page.type_into("#token", web.secrets["deployer"])
        page.click("#token-save")
        page.wait_for(f"document.querySelector('section.release[data-release=\"{rid}\"]')", 20)
        assert page.evaluate("sessionStorage.getItem('coalmine-token')") == web.secrets["deployer"]
        assert (
            page.evaluate("document.documentElement.outerHTML").count(web.secrets["deployer"]) == 0
        )
        assert page.evaluate("document.querySelector('section.release').dataset.phase") == "running"
        assert page.evaluate("document.querySelectorAll('svg.chart circle.point').length") >= 2
        assert "10%" in page.evaluate("document.querySelector('b.exposure').innerText")

        page.click('button.op[data-op="rollback"]')
        took = page.wait_for(
            "['rolling_back', 'rolled_back'].includes("
            "document.querySelector('section.release').dataset.phase)",
            1.0,
        )
        assert str(web.service.releases.get(rid).phase) in ("rolling_back", "rolled_back")
        assert page.evaluate("document.querySelectorAll('li.event.alert').length") >= 1
        page.screenshot(ARTIFACTS / "ui-release.png")
    assert (ARTIFACTS / "ui-release.png").stat().st_size > 1000
    assert took <= 1.0


@pytest.mark.parametrize("path", ["/ui", "/ui/ui.js"])
def test_shell_and_script_need_no_token(sqlite_web: Web, path: str) -> None:
    assert sqlite_web.client.get(path).status_code == 200
