"""Tokens: secrets shown once and stored hashed, roles, revocation, the admin bootstrap."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from coalmine.controller.tokens import TokenService
from coalmine.core.errors import Conflict, InvalidInput, NotFound
from coalmine.store.db import Store, open_store
from coalmine.web.auth import bootstrap_admin
from tests.web.conftest import ADMIN_SECRET, Web, bearer, running


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    s = open_store(database_url)
    yield s
    s.dispose()


def _raw_rows(store: Store) -> list[tuple[object, ...]]:
    with store.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text("SELECT * FROM tokens"))]


def test_secrets_are_shown_once_and_stored_hashed(store: Store) -> None:
    tokens = TokenService(store)
    admin = tokens.create("ops", "admin")
    viewer = tokens.create("grafana", "viewer")
    with store.transaction() as s:
        s.execute(
            text(
                "INSERT INTO apps (name, settings, revision, created_at) VALUES ('shop', '{}', 0, 0)"
            )
        )
    sdk = tokens.create("shop-lambdas", "sdk", app="shop")

    assert admin.token.startswith("cm_")
    assert len(admin.token) > 40
    assert viewer.token.startswith("cm_")
    assert viewer.token != admin.token
    assert sdk.token.startswith("cmsdk_")
    assert sdk.app == "shop"
    assert admin.prefix == admin.token[:12]

    rows = _raw_rows(store)
    assert len(rows) == 3
    stored = {hashlib.sha256(t.token.encode()).hexdigest() for t in (admin, viewer, sdk)}
    for row in rows:
        for value in row:
            for t in (admin, viewer, sdk):
                assert t.token not in str(value), "the database must never hold a secret"
    assert stored <= {v for row in rows for v in row}
    assert all("token" not in t.model_dump() for t in tokens.list())


def test_authenticate_roles_and_revocation(store: Store) -> None:
    tokens = TokenService(store)
    admin = tokens.create("ops", "admin")
    deployer = tokens.create("ci", "deployer")

    p = tokens.authenticate(deployer.token)
    assert p is not None
    assert (p.name, p.role, p.app) == ("ci", "deployer", None)
    assert p.has_role("viewer")
    assert p.has_role("deployer")
    assert not p.has_role("admin")
    assert tokens.authenticate(deployer.token + "x") is None
    assert tokens.authenticate("") is None

    tokens.revoke(deployer.id)
    assert tokens.authenticate(deployer.token) is None
    assert tokens.revoke(deployer.id).revoked_at is not None  # idempotent
    with pytest.raises(NotFound, match="no token with id 999"):
        tokens.revoke(999)
    with pytest.raises(Conflict, match="last admin token"):
        tokens.revoke(admin.id)
    assert tokens.has_admin()


def test_create_rejects_what_cannot_work(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    try:
        tokens = TokenService(store)
        with pytest.raises(InvalidInput, match="sdk key belongs to one app"):
            tokens.create("k", "sdk")
        with pytest.raises(NotFound, match="no app named 'nope'"):
            tokens.create("k", "sdk", app="nope")
        with pytest.raises(InvalidInput, match="only sdk and browser keys belong to an app"):
            tokens.create("k", "viewer", app="shop")
        with pytest.raises(InvalidInput, match="unknown role 'root'"):
            tokens.create("k", "root")
        with pytest.raises(InvalidInput, match="16-512 printable"):
            tokens.create("k", "admin", secret="short")
        tokens.create("k", "admin", secret=ADMIN_SECRET)
        with pytest.raises(Conflict, match="already exists"):
            tokens.create("k2", "admin", secret=ADMIN_SECRET)
        assert len(tokens.list()) == 1
    finally:
        store.dispose()


def test_tokens_over_http(web: Web) -> None:
    c = web.client
    r = c.post("/v1/tokens", json={"name": "dashboard", "role": "viewer"}, headers=web.as_("admin"))
    assert r.status_code == 201, r.text
    created = r.json()
    secret = created["token"]
    assert secret.startswith("cm_")
    assert created["prefix"] == secret[:12]
    assert c.get("/v1/apps", headers=bearer(secret)).status_code == 200

    listed = c.get("/v1/tokens", headers=web.as_("admin")).json()
    assert [t["name"] for t in listed] == ["bootstrap", "test-deployer", "test-viewer", "dashboard"]
    assert all("token" not in t for t in listed)
    assert secret not in c.get("/v1/tokens", headers=web.as_("admin")).text

    r = c.delete(f"/v1/tokens/{created['id']}", headers=web.as_("admin"))
    assert r.status_code == 204
    assert r.content == b""
    r = c.get("/v1/apps", headers=bearer(secret))
    assert r.status_code == 401
    assert r.json() == {"detail": "invalid or revoked token"}
    revoked = [
        t for t in c.get("/v1/tokens", headers=web.as_("admin")).json() if t["id"] == created["id"]
    ]
    assert revoked[0]["revoked_at"] is not None

    assert c.delete("/v1/tokens/9999", headers=web.as_("admin")).status_code == 404
    # an id no column can hold is refused up front (it was a 500 on both stores)
    for huge in (2**31, 27144115505536662765568):
        r = c.delete(f"/v1/tokens/{huge}", headers=web.as_("admin"))
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith("path.token_id: ")
    # so is a query parameter the operation does not take (a typo is not ignored)
    r = c.get("/v1/tokens?rol=admin", headers=web.as_("admin"))
    assert r.status_code == 422
    assert r.json()["detail"] == "query.rol: unknown query parameter (this operation takes: none)"
    r = c.post("/v1/tokens", json={"name": "k", "role": "sdk"}, headers=web.as_("admin"))
    assert r.status_code == 400
    assert "one app" in r.json()["detail"]
    r = c.post("/v1/tokens", json={"name": "k", "role": "root"}, headers=web.as_("admin"))
    assert r.status_code == 422
    assert r.json()["detail"].startswith("role: ")
    web.apply()
    r = c.post(
        "/v1/tokens", json={"name": "k", "role": "sdk", "app": "shop"}, headers=web.as_("admin")
    )
    assert r.status_code == 201
    assert r.json()["token"].startswith("cmsdk_")


def test_bootstrap_uses_the_env_secret_once(
    sqlite_url: str, admin_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with running(sqlite_url) as web:
        boot = [t for t in web.tokens.list() if t.name == "bootstrap"]
        assert len(boot) == 1
        assert boot[0].role == "admin"
        assert web.client.get("/v1/tokens", headers=bearer(ADMIN_SECRET)).status_code == 200
    with running(sqlite_url) as web:  # a restart creates nothing
        assert len([t for t in web.tokens.list() if t.role == "admin"]) == 1
    assert ADMIN_SECRET not in capsys.readouterr().err


def test_bootstrap_generates_and_prints_a_token_once(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COALMINE_BOOTSTRAP_TOKEN", raising=False)
    store = open_store(sqlite_url)
    try:
        tokens = TokenService(store)
        out = io.StringIO()
        created = bootstrap_admin(tokens, env={}, out=out)
        assert created is not None
        assert created.role == "admin"
        assert out.getvalue() == (
            f"coalmine: created admin token {created.token} (name 'bootstrap');"
            " it is shown only once\n"
        )
        assert tokens.authenticate(created.token) is not None
        again = io.StringIO()
        assert bootstrap_admin(tokens, env={}, out=again) is None
        assert again.getvalue() == ""

        # an env secret is ignored while an admin exists...
        env = {"COALMINE_BOOTSTRAP_TOKEN": ADMIN_SECRET}
        assert bootstrap_admin(tokens, env=env) is None
        assert tokens.authenticate(ADMIN_SECRET) is None
        # ...and a revoked env secret is never revived: with no admin left, a new one is made
        tokens.revoke(tokens.create("old", "admin", secret=ADMIN_SECRET).id)
        with store.transaction() as s:
            s.execute(text("UPDATE tokens SET revoked_at = 1 WHERE revoked_at IS NULL"))
        assert not tokens.has_admin()
        fresh = io.StringIO()
        made = bootstrap_admin(tokens, env=env, out=fresh)
        assert made is not None
        assert made.token != ADMIN_SECRET
        assert made.token in fresh.getvalue()
        assert tokens.authenticate(ADMIN_SECRET) is None
    finally:
        store.dispose()


def test_bootstrap_at_startup_prints_to_stderr(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("COALMINE_BOOTSTRAP_TOKEN", raising=False)
    from coalmine.web import create_app
    from tests.web.conftest import TestClient

    with TestClient(create_app(database_url=sqlite_url)) as client:
        err = capsys.readouterr().err
        assert "coalmine: created admin token cm_" in err
        assert "shown only once" in err
        secret = err.split("created admin token ", 1)[1].split()[0]
        assert client.get("/v1/tokens", headers=bearer(secret)).status_code == 200
    with TestClient(create_app(database_url=sqlite_url)):
        assert "created admin token" not in capsys.readouterr().err
