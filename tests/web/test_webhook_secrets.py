"""Event webhook URLs are secrets (a Slack or Teams incoming-webhook URL is its credential):
no API route and no dashboard fragment shows more of one than its scheme and host, to any
token, while the notifications still go to the whole URL."""

from __future__ import annotations

import re
import time
from typing import Any

from coalmine.controller.schemas import redacted_webhook_url
from coalmine.core.machine import Tick
from tests.web.conftest import APP_DOC, Web, bearer

SLACK = "https://hooks.slack.com/services/T0SLACK/B0SLACK/sl4ck-s3cret-pathpart"
TEAMS = (
    "https://prod-01.westeurope.logic.azure.com:443/workflows/t3ams-w0rkflow/triggers/manual"
    "/paths/invoke?api-version=2016-06-01&sig=t3ams-s1g-secret"
)
PLAIN = "https://user:pl4in-passw0rd@ci.example:8443/hooks/pl4in-path-secret?token=pl4in-q"
SECRETS = ("sl4ck-s3cret", "T0SLACK", "t3ams", "pl4in", "/services/", "/workflows/")
DOC = (
    APP_DOC
    + f"""\
  webhooks:
    - {PLAIN}
    - {{url: "{SLACK}", format: slack}}
    - {{url: "{TEAMS}", format: teams, events: [rolled_back]}}
"""
)


def test_a_webhook_url_is_shown_as_its_scheme_and_host() -> None:
    assert redacted_webhook_url(SLACK) == "https://hooks.slack.com/…"
    assert redacted_webhook_url(TEAMS) == "https://prod-01.westeurope.logic.azure.com:443/…"
    assert redacted_webhook_url(PLAIN) == "https://ci.example:8443/…"
    assert redacted_webhook_url("http://[::1]:9/x") == "http://[::1]:9/…"


def _get_paths(spec: dict[str, Any], rid: str) -> list[str]:
    """Every GET operation of the API (streams left out: they repeat their plain reads)."""
    fill = {"{app}": "shop", "{release_id}": rid, "{key}": "shop", "{id}": "1", "{name}": "x"}
    out = []
    for path, ops in spec["paths"].items():
        if "get" not in ops or path.endswith("/stream"):
            continue
        for k, v in fill.items():
            path = path.replace(k, v)
        assert "{" not in path, f"fill in {path}"
        out.append(path)
    return out


def test_no_route_shows_a_webhook_url_to_any_token(sqlite_web: Web) -> None:
    web = sqlite_web
    applied = web.client.post(
        "/v1/apply",
        content=DOC,
        headers={**web.as_("deployer"), "Content-Type": "application/yaml"},
    )
    assert applied.status_code == 200, applied.text
    r = web.client.post(
        "/v1/apps/shop/releases", json={"candidate": {"api": "v2"}}, headers=web.as_("deployer")
    )
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    assert web.service.releases.advance(rid, Tick(time.time() + 1e6)) is not None
    answers = [applied.text, r.text]
    tokens = {
        **{role: web.secrets[role] for role in ("admin", "deployer", "viewer")},
        "sdk": web.sdk_key("shop"),
        "browser": web.browser_key("shop"),
        "scraper": web.tokens.create("scrape", "scraper").token,
    }
    spec = web.client.get("/openapi.json", headers=web.as_("viewer")).json()
    paths = [
        *_get_paths(spec, rid),
        "/v1/discovery?app=shop&user=alice",
        "/ui/fragments/apps",
        f"/ui/fragments/releases/{rid}",
        "/metrics",
    ]
    read = 0
    for secret in tokens.values():
        for path in paths:
            got = web.client.get(path, headers=bearer(secret))
            read += got.status_code == 200
            answers.append(got.text)
    assert read > 3 * len(paths) // 2  # most reads answered (viewers and up read them all)
    for body in answers:
        leaked = [s for s in SECRETS if s in body]
        assert not leaked, f"{leaked} in {body[:300]}"

    shown = web.client.get("/v1/apps/shop", headers=web.as_("admin")).json()["settings"]
    assert shown["webhooks"] == [
        "https://ci.example:8443/…",
        {"url": "https://hooks.slack.com/…", "format": "slack", "events": None},
        {
            "url": "https://prod-01.westeurope.logic.azure.com:443/…",
            "format": "teams",
            "events": ["rolled_back"],
        },
    ]
    # stored whole: the outbox holds deliveries to the real URLs
    with web.service.uow() as w:
        app = w.apps.find("shop")
        assert app is not None
        stored = [e if isinstance(e, str) else e["url"] for e in app.settings["webhooks"]]
    assert stored == [PLAIN, SLACK, TEAMS]
    assert re.search(r"/…", web.client.get("/v1/apps", headers=web.as_("viewer")).text)
