"""`coalmine token ...` acts on the store directly and shows a secret once."""

from __future__ import annotations

import json

import pytest

from coalmine.cli import main
from coalmine.controller.plane import ControlPlane
from coalmine.controller.tokens import TokenService
from coalmine.store.changes import ChangeFeed
from coalmine.store.db import open_store


def test_create_list_revoke(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            ["token", "create", "--name", "ci", "--role", "deployer", "--database-url", sqlite_url]
        )
        == 0
    )
    out = capsys.readouterr()
    secret = out.out.strip()
    assert secret.startswith("cm_")
    assert "shown only this once" in out.err

    store = open_store(sqlite_url)
    try:
        principal = TokenService(store).authenticate(secret)
        assert principal is not None
        assert principal.role == "deployer"
    finally:
        store.dispose()

    assert main(["token", "list", "--json", "--database-url", sqlite_url]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in listed] == ["ci"]
    assert secret not in json.dumps(listed), "a listing never shows the secret"

    assert main(["token", "revoke", str(listed[0]["id"]), "--database-url", sqlite_url]) == 0
    store = open_store(sqlite_url)
    try:
        assert TokenService(store).authenticate(secret) is None
    finally:
        store.dispose()


def test_bad_role_is_exit_code_2(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["token", "create", "--name", "x", "--role", "root", "--database-url", sqlite_url])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1
    assert "unknown role 'root'" in err[0]


def test_sdk_key_needs_an_existing_app(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "token",
            "create",
            "--name",
            "web",
            "--role",
            "sdk",
            "--app",
            "nope",
            "--database-url",
            sqlite_url,
        ]
    )
    assert code == 2
    assert "no app named 'nope'" in capsys.readouterr().err


def test_a_browser_key_and_a_scraper_token(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_store(sqlite_url)
    try:
        ControlPlane(store, ChangeFeed(store)).catalog.create_app("shop", "test")
    finally:
        store.dispose()
    db = ["--database-url", sqlite_url]
    assert (
        main(["token", "create", "--name", "web", "--role", "browser", "--app", "shop", *db]) == 0
    )
    assert capsys.readouterr().out.startswith("cmpub_")
    assert main(["token", "create", "--name", "prom", "--role", "scraper", *db]) == 0
    assert capsys.readouterr().out.startswith("cm_")
    # a browser key belongs to one app
    assert main(["token", "create", "--name", "web", "--role", "browser", *db]) == 2
    err = capsys.readouterr().err
    assert "a browser key belongs to one app" in err
