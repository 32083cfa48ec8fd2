"""open_store migrates an empty database to Alembic head, idempotently, matching the models."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, select, text

from coalmine.store import db
from coalmine.store.db import Store, open_store
from coalmine.store.models import AppRow, Base

TABLES = {"alembic_version", "apps", "events", "functions", "releases", "tokens", "versions"}
TABLES |= {"alarms", "analysis_runs"}  # 0003
TABLES |= {"metric_windows"}  # 0002


def head_revision() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db.__file__).with_name("migrations")))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def schema_diff(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))


def test_open_store_creates_the_schema_at_head_and_reopening_is_a_no_op(
    database_url: str,
) -> None:
    store = open_store(database_url)
    try:
        assert set(inspect(store.engine).get_table_names()) == TABLES
        assert current_revision(store.engine) == head_revision()
        assert schema_diff(store.engine) == []
        with store.transaction() as s:
            s.add(AppRow(name="kept", settings={}, created_at=1.0))
    finally:
        store.dispose()

    again = open_store(database_url)
    try:
        assert current_revision(again.engine) == head_revision()
        assert set(inspect(again.engine).get_table_names()) == TABLES
        assert schema_diff(again.engine) == []
        with again.transaction() as s:
            assert list(s.scalars(select(AppRow.name))) == ["kept"]
        with again.engine.connect() as conn:
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        assert [r[0] for r in rows] == [head_revision()]
    finally:
        again.dispose()


def test_the_one_active_release_index_is_partial_on_both_dialects(database_url: str) -> None:
    """compare_metadata does not look at index predicates: read them from the catalog."""
    store = open_store(database_url)
    try:
        with store.engine.connect() as conn:
            if store.is_postgres:
                sql = conn.scalar(
                    text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"),
                    {"n": "uq_releases_one_active_per_app"},
                )
            else:
                sql = conn.scalar(
                    text("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :n"),
                    {"n": "uq_releases_one_active_per_app"},
                )
        assert sql is not None
        assert "UNIQUE" in sql.upper()
        assert "WHERE" in sql.upper()
        for phase in ("pending", "running", "paused", "promoting", "rolling_back"):
            assert f"'{phase}'" in sql
        for phase in ("promoted", "rolled_back", "failed"):
            assert f"'{phase}'" not in sql
    finally:
        store.dispose()


def test_open_store_without_migrations_leaves_an_empty_database_alone(sqlite_url: str) -> None:
    store = open_store(sqlite_url, run_migrations=False)
    try:
        assert inspect(store.engine).get_table_names() == []
        assert current_revision(store.engine) is None
    finally:
        store.dispose()


def test_replicas_starting_together_on_postgres_all_get_the_schema(pg_url: str) -> None:
    """Several replicas migrate the same empty database at once: they take turns."""
    gate = threading.Barrier(3, timeout=30)
    stores: list[Store] = []
    errors: list[BaseException] = []

    def start_replica() -> None:
        gate.wait()
        try:
            stores.append(open_store(pg_url))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start_replica, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    try:
        assert not any(t.is_alive() for t in threads), "a replica is stuck migrating"
        assert errors == []
        assert len(stores) == 3
        assert current_revision(stores[0].engine) == head_revision()
        assert schema_diff(stores[0].engine) == []
    finally:
        for store in stores:
            store.dispose()
