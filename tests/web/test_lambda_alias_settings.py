"""``release.lambda_alias`` over the API: validated as Lambda validates alias names, shown in
the app's settings, and copied onto each release when it starts."""

from __future__ import annotations

import pytest

from tests.web.conftest import APP_DOC, Web

LIVE_DOC = APP_DOC + "  lambda_alias: live\n"


NAMES = "use 1-128 letters, digits, '-' or '_', not only digits"


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("'123'", NAMES),
        ("'live!'", NAMES),
        ("'" + "a" * 129 + "'", NAMES),
        ("''", NAMES),
        ("[live]", "Input should be a valid string"),
    ],
)
def test_a_bad_alias_name_is_refused_and_changes_nothing(
    sqlite_web: Web, bad: str, why: str
) -> None:
    sqlite_web.apply()
    before = sqlite_web.fingerprint()
    r = sqlite_web.client.post(
        "/v1/apply",
        content=APP_DOC + f"  lambda_alias: {bad}\n",
        headers={**sqlite_web.as_("deployer"), "Content-Type": "application/yaml"},
    )
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith("release.lambda_alias: "), detail
    assert why in detail
    assert sqlite_web.fingerprint() == before


def test_the_alias_is_in_the_settings_and_on_each_release(sqlite_web: Web) -> None:
    assert sqlite_web.apply(LIVE_DOC)["changed"] is True
    c, dep = sqlite_web.client, sqlite_web.as_("deployer")
    app = c.get("/v1/apps/shop", headers=dep).json()
    assert app["settings"]["lambda_alias"] == "live"
    r = c.post("/v1/apps/shop/releases", json={"candidate": {"api": "v2"}}, headers=dep)
    assert r.status_code == 201, r.text
    assert r.json()["lambda_alias"] == "live"
