"""`coalmine signing-keys` against a real control plane: prints exactly the value of
COALMINE_SIGNING_KEYS for an admin token, and nothing for any other token."""

from __future__ import annotations

import json

import pytest

from coalmine.cli.app import run
from coalmine.controller.signing_keys import StoredSigningKeys
from coalmine.core.signing import Keyring
from coalmine.web import create_app
from tests.web.conftest import ADMIN_SECRET, serve


def test_signing_keys_prints_the_stored_keyring_for_an_admin_only(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COALMINE_BOOTSTRAP_TOKEN", ADMIN_SECRET)
    monkeypatch.delenv("COALMINE_SIGNING_KEYS", raising=False)
    app = create_app(database_url=sqlite_url)
    stored = StoredSigningKeys(app.state.plane.store).read()
    assert stored is not None
    with serve(app) as base:
        monkeypatch.setenv("COALMINE_TOKEN", ADMIN_SECRET)
        assert run(["signing-keys", "--url", base]) == 0
        out = capsys.readouterr().out
        assert out == stored + "\n"  # what `export COALMINE_SIGNING_KEYS="$(...)"` takes
        assert Keyring.parse(out.strip()).active == "k1"
        assert run(["signing-keys", "--url", base, "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == {
            "keys": stored,
            "active": "k1",
            "env": "COALMINE_SIGNING_KEYS",
        }
        viewer = app.state.tokens.create("v", "viewer").token
        assert run(["signing-keys", "--url", base, "--token", viewer]) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        assert "needs admin" in captured.err
        assert stored.split(":", 1)[1] not in captured.err
