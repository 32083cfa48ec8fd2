"""Engines and units of work: URLs, SQLite connection settings, transaction isolation."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from coalmine.store import db
from coalmine.store.db import open_store


def test_sqlite_connections_enforce_foreign_keys_and_use_wal(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    try:
        with store.engine.connect() as conn:
            assert conn.scalar(text("PRAGMA foreign_keys")) == 1
            assert str(conn.scalar(text("PRAGMA journal_mode"))).lower() == "wal"
    finally:
        store.dispose()


def test_database_url_prefers_explicit_then_environment_then_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("COALMINE_DATABASE_URL", raising=False)
    assert db.database_url(None) == db.DEFAULT_DATABASE_URL == "sqlite:///coalmine.db"
    monkeypatch.setenv("COALMINE_DATABASE_URL", "postgresql://db/coalmine")
    assert db.database_url(None) == "postgresql://db/coalmine"
    assert db.database_url("sqlite:///other.db") == "sqlite:///other.db"


def test_plain_postgresql_urls_use_the_psycopg_driver() -> None:
    engine = db.make_engine("postgresql://user@127.0.0.1:5432/coalmine")
    try:
        assert engine.url.drivername == "postgresql+psycopg"
    finally:
        engine.dispose()


def test_postgres_snapshots_read_one_committed_state(pg_url: str) -> None:
    store = open_store(pg_url)
    try:
        with store.snapshot() as s:
            assert s.scalar(text("SHOW transaction_isolation")) == "repeatable read"
        with store.transaction() as s:  # writers keep the default
            assert s.scalar(text("SHOW transaction_isolation")) == "read committed"
    finally:
        store.dispose()
