"""Hook credentials and outbound URLs at the API: header values are never shown in app and
release reads (they stay stored, and are sent); header values with CR/LF or names with NUL,
and webhooks that are not http(s), are 422s that change nothing."""

from __future__ import annotations

from typing import Any

import pytest

from coalmine.controller.schemas import REDACTED
from coalmine.core.machine import Hook
from tests.web.conftest import APP_DOC, Web

SECRET = "Bearer s3cret-t0ken"
HOOKS_DOC = (
    APP_DOC
    + f"""\
  hooks:
    after_allow_traffic:
      url: https://ci.example/after
      headers: {{authorization: {SECRET}, x-team: payments}}
"""
)


def test_hook_header_values_are_redacted_in_every_read(sqlite_web: Web) -> None:
    sqlite_web.apply(HOOKS_DOC)
    viewer = sqlite_web.as_("viewer")
    app = sqlite_web.client.get("/v1/apps/shop", headers=viewer).json()
    assert app["settings"]["hooks"]["after_allow_traffic"]["headers"] == {
        "authorization": REDACTED,
        "x-team": REDACTED,
    }
    r = sqlite_web.client.post(
        "/v1/apps/shop/releases",
        json={
            "candidate": {"api": "v2"},
            "hooks": {
                "before_allow_traffic": {
                    "url": "https://ci.example/before",
                    "headers": {"authorization": SECRET},
                }
            },
        },
        headers=sqlite_web.as_("deployer"),
    )
    assert r.status_code == 201, r.text
    release_id = r.json()["id"]
    reads = [
        r.text,
        sqlite_web.client.get(f"/v1/releases/{release_id}", headers=viewer).text,
        sqlite_web.client.get("/v1/apps/shop/releases", headers=viewer).text,
        sqlite_web.client.get("/v1/apps/shop", headers=viewer).text,
        sqlite_web.client.get(f"/v1/releases/{release_id}/events", headers=viewer).text,
    ]
    for body in reads:
        assert "s3cret" not in body
    assert r.json()["hooks"]["before_allow_traffic"]["headers"] == {"authorization": REDACTED}
    stored = sqlite_web.service.releases.get(release_id)
    assert stored.hooks[Hook.BEFORE_ALLOW_TRAFFIC].headers == {"authorization": SECRET}, (
        "kept for use"
    )
    assert sqlite_web.apply(HOOKS_DOC)["changed"] is False, "a redacted read is not a change"


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({"x-a": "ok\r\nx-injected: 1"}, "may not hold CR, LF or NUL"),
        ({"x-a": "ok\nmore"}, "may not hold CR, LF or NUL"),
        ({"x-\u0000a": "v"}, "is not a token"),
        ({"x a": "v"}, "is not a token"),
    ],
    ids=["crlf", "lf", "nul-name", "space-name"],
)
def test_a_hook_header_that_could_split_a_request_is_refused(
    sqlite_web: Web, headers: dict[str, str], fragment: str
) -> None:
    sqlite_web.apply()
    before = sqlite_web.fingerprint()
    hook: dict[str, Any] = {"url": "https://ci.example/x", "headers": headers}
    r = sqlite_web.client.post(
        "/v1/apps/shop/releases",
        json={"candidate": {"api": "v2"}, "hooks": {"before_allow_traffic": hook}},
        headers=sqlite_web.as_("deployer"),
    )
    assert r.status_code == 422
    assert fragment in r.json()["detail"]
    assert sqlite_web.fingerprint() == before


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "gopher://127.0.0.1:6379/_FLUSHALL", "ftp://x/", "http//x"]
)
def test_a_webhook_must_be_an_http_url(sqlite_web: Web, url: str) -> None:
    sqlite_web.apply()
    before = sqlite_web.fingerprint()
    r = sqlite_web.client.post(
        "/v1/apply",
        content=APP_DOC + f"  webhooks: [{url!r}]\n",
        headers={**sqlite_web.as_("deployer"), "Content-Type": "application/yaml"},
    )
    assert r.status_code == 422, r.text
    assert "a webhook is an http:// or https:// URL" in r.text
    assert sqlite_web.fingerprint() == before
