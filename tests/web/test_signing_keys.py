"""The signing keys the control plane makes on its first start: stored, shared by restarts and
replicas, read by admins only, and never made when keys are given."""

from __future__ import annotations

import threading
import time

import pytest

from coalmine.controller.signing_keys import StoredSigningKeys
from coalmine.core.context import RoutingContext, decode_context
from coalmine.core.signing import Keyring
from coalmine.store.db import open_store
from tests.web.conftest import Web, bearer, running
from tests.web.test_discovery import HTTP_DOC, start_release


@pytest.fixture
def no_keys_env(monkeypatch: pytest.MonkeyPatch, admin_env: str) -> None:
    monkeypatch.delenv("COALMINE_SIGNING_KEYS", raising=False)


def _context(web: Web) -> str:
    key = web.browser_key("shop")
    r = web.client.get("/v1/discovery", params={"app": "shop", "user": "u-1", "key": key})
    assert r.status_code == 200, r.text
    context: str = r.json()["context"]
    return context


def _keys(web: Web) -> str:
    r = web.client.get("/v1/signing-keys", headers=web.as_("admin"))
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert (body["active"], body["env"]) == ("k1", "COALMINE_SIGNING_KEYS")
    keys: str = body["keys"]
    return keys


def _verifies(context: str, keys: str) -> bool:
    decoded = decode_context(context, Keyring.parse(keys), now=time.time(), user="u-1")
    return isinstance(decoded, RoutingContext)


def test_the_first_start_makes_keys_that_sign_discovery_and_restarts_keep_them(
    database_url: str, no_keys_env: None
) -> None:
    with running(database_url) as web:
        assert web.app.state.signing_keys_made is True
        web.apply(HTTP_DOC)
        start_release(web)
        keys = _keys(web)
        first = _context(web)
        assert first is not None  # discovery's context is not null by default
        assert _verifies(first, keys)
    # a restart (or another replica on the same store) signs with the same keys
    with running(database_url) as again:
        assert again.app.state.signing_keys_made is False
        assert _keys(again) == keys
        assert _verifies(_context(again), keys)
    assert not _verifies(first, "k1:some-other-secret-0123456789")


def test_only_an_admin_reads_the_signing_keys(sqlite_url: str, no_keys_env: None) -> None:
    with running(sqlite_url) as web:
        web.apply(HTTP_DOC)
        start_release(web)
        keys = _keys(web)
        secret = keys.split(":", 1)[1]
        tokens = web.tokens
        others = {
            "viewer": web.secrets["viewer"],
            "deployer": web.secrets["deployer"],
            "scraper": tokens.create("prom", "scraper").token,
            "sdk": web.sdk_key("shop"),
            "browser": web.browser_key("shop"),
        }
        c = web.client
        assert c.get("/v1/signing-keys").status_code == 401
        for kind, token in others.items():
            r = c.get("/v1/signing-keys", headers=bearer(token))
            assert r.status_code == 403, (kind, r.text)
            assert secret not in r.text
        # nor is the secret in anything else those keys may read
        viewer, sdk, browser = bearer(others["viewer"]), bearer(others["sdk"]), others["browser"]
        for path, headers in (
            ("/v1/apps", viewer),
            ("/v1/apps/shop", viewer),
            ("/v1/events", viewer),
            ("/v1/apps/shop/releases", viewer),
            ("/openapi.json", viewer),
            ("/v1/apps/shop/routing", sdk),
            (f"/v1/discovery?app=shop&user=u-1&key={browser}", {}),
        ):
            r = c.get(path, headers=headers)
            assert r.status_code == 200, (path, r.text)
            assert secret not in r.text, path


def test_a_given_keyring_wins_and_nothing_is_stored(
    sqlite_url: str, admin_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COALMINE_SIGNING_KEYS", "e1:env-secret-0123456789abcdef")
    with running(sqlite_url) as web:
        assert (web.app.state.signing_keys_made, web.app.state.signing_keys_source) == (
            False,
            "given",
        )
        web.apply(HTTP_DOC)
        start_release(web)
        assert _context(web).startswith("1.e1.")
        r = web.client.get("/v1/signing-keys", headers=web.as_("admin"))
        assert r.status_code == 404
        assert "COALMINE_SIGNING_KEYS" in r.json()["detail"]
        assert StoredSigningKeys(web.service.store).read() is None


def test_replicas_starting_together_make_one_keyring(pg_url: str) -> None:
    stores = [open_store(pg_url) for _ in range(4)]
    try:
        gate = threading.Barrier(len(stores))
        got: list[tuple[Keyring, bool]] = []

        def start(store: object) -> None:
            gate.wait(timeout=30)
            got.append(StoredSigningKeys(store).load_or_create(time.time()))  # type: ignore[arg-type]

        threads = [threading.Thread(target=start, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(got) == len(stores)
        assert sum(made for _, made in got) == 1
        assert len({tuple(ring.keys.items()) for ring, _ in got}) == 1
    finally:
        for s in stores:
            s.dispose()
