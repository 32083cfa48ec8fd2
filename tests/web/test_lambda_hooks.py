"""Lambda hooks through the API: in a release and in coalmine.yaml's ``release:`` block,
read back with ``lambda``; a hook that names both or neither target is a 422 that says so."""

from __future__ import annotations

from typing import Any

import pytest

from tests.web.conftest import APP_DOC, Web

CHECK = "arn:aws:lambda:us-east-1:123456789012:function:pre-traffic:live"
HOOKS_DOC = (
    APP_DOC
    + f"""\
  hooks:
    before_allow_traffic:
      lambda: {CHECK}
      timeout: 30
    after_allow_traffic:
      url: https://ci.example/after
      headers: {{authorization: Bearer s3cret}}
"""
)


def test_hooks_in_coalmine_yaml_apply_once_and_reach_the_release(sqlite_web: Web) -> None:
    first = sqlite_web.apply(HOOKS_DOC)
    assert first["changed"] is True
    assert sqlite_web.apply(HOOKS_DOC)["changed"] is False, "applying twice changes nothing"
    app = sqlite_web.client.get("/v1/apps/shop", headers=sqlite_web.as_("viewer")).json()
    assert app["settings"]["hooks"]["before_allow_traffic"] == {
        "lambda": CHECK,
        "timeout": 30.0,
        "retries": 2,
        "headers": {},
    }
    r = sqlite_web.client.post(
        "/v1/apps/shop/releases",
        json={"candidate": {"api": "v2"}},
        headers=sqlite_web.as_("deployer"),
    )
    assert r.status_code == 201, r.text
    hooks = r.json()["hooks"]
    assert hooks["before_allow_traffic"]["lambda"] == CHECK
    assert "url" not in hooks["before_allow_traffic"]
    assert hooks["after_allow_traffic"]["url"] == "https://ci.example/after"
    assert "lambda" not in hooks["after_allow_traffic"]


@pytest.mark.parametrize(
    ("hook", "fragment"),
    [
        ({}, "a hook needs exactly one of url (an HTTP endpoint) and lambda (a function)"),
        (
            {"url": "https://ci.example/x", "lambda": "check"},
            "a hook needs exactly one of url (an HTTP endpoint) and lambda (a function)",
        ),
        ({"lambda": "check", "headers": {"a": "b"}}, "headers go with a url hook"),
        ({"lambda": "not a function"}, "invalid lambda 'not a function'"),
    ],
    ids=["neither", "both", "headers", "malformed"],
)
def test_a_hook_must_name_one_target(sqlite_web: Web, hook: dict[str, Any], fragment: str) -> None:
    sqlite_web.apply()
    before = sqlite_web.fingerprint()
    r = sqlite_web.client.post(
        "/v1/apps/shop/releases",
        json={"candidate": {"api": "v2"}, "hooks": {"before_allow_traffic": hook}},
        headers=sqlite_web.as_("deployer"),
    )
    assert r.status_code == 422
    assert "hooks.before_allow_traffic" in r.json()["detail"]
    assert fragment in r.json()["detail"]
    assert sqlite_web.fingerprint() == before
