"""open_store migrates an empty database to Alembic head, idempotently, matching the models."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import BigInteger, Engine, inspect, select, text

from coalmine.core.histogram import MAX_COUNT
from coalmine.store import db
from coalmine.store.db import Store, open_store
from coalmine.store.models import AppRow, Base

TABLES = {"alembic_version", "apps", "events", "functions", "releases", "tokens", "versions"}
TABLES |= {"alarms", "analysis_runs"}  # 0003
TABLES |= {"metric_windows"}  # 0002
TABLES |= {"webhook_deliveries"}  # 0008
TABLES |= {"server_secrets"}  # 0009


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


def test_0004_fills_the_release_state_from_the_audit_log(database_url: str) -> None:
    """A store written before 0004 keeps what its events said: when traffic started,
    which decided pause was still to be done, which alarm report was written."""
    engine = db.make_engine(database_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db.__file__).with_name("migrations")))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
    release = (
        "INSERT INTO releases (id, app_id, seq, phase, route_mode, salt, strategy, baseline,"
        " candidate, targeting, hooks, analysis, exposure, step, created_by, created_at,"
        " updated_at, row_version) VALUES (:id, :app, :seq, :phase, 'user', 'abcdefgh', '{}',"
        " '{}', '{}', '{}', '{}', '{}', 0, 0, 'me', 10, 10, 1)"
    )
    event = (
        "INSERT INTO events (id, app, release_id, at, actor, kind, message, data)"
        " VALUES (:id, 'shop', :rid, :at, 'c', :kind, '', :data)"
    )
    run = (
        "INSERT INTO analysis_runs (id, release_id, at, window_start, window_end, outcome,"
        " results, action) VALUES (:id, :rid, 1, 0, 1, 'inconclusive', :results, :action)"
    )
    with engine.begin() as conn:
        for app_id, name in ((1, "shop"), (2, "blog")):  # one active release per app
            conn.execute(
                text(
                    "INSERT INTO apps (id, name, settings, revision, created_at)"
                    " VALUES (:id, :name, '{}', 0, 1)"
                ),
                {"id": app_id, "name": name},
            )
        for rid, app_id, seq, phase in (
            ("shop-1", 1, 1, "rolled_back"),
            ("shop-2", 1, 2, "paused"),
            ("shop-3", 2, 3, "running"),
        ):
            conn.execute(text(release), {"id": rid, "app": app_id, "seq": seq, "phase": phase})
        for eid, rid, at, kind, data in (
            (1, "shop-2", 20.0, "started", "{}"),
            (2, "shop-2", 30.0, "analysis", "{}"),  # run 2 decided a pause...
            (3, "shop-2", 31.0, "paused", "{}"),  # ...and it was done
            (4, "shop-3", 40.0, "started", "{}"),
            (5, "shop-3", 50.0, "analysis", "{}"),  # run 3 decided a pause, never done
            (6, "shop-3", 51.0, "alarm", '{"alarm": "p99", "since": 5.0}'),
        ):
            conn.execute(text(event), {"id": eid, "rid": rid, "at": at, "kind": kind, "data": data})
        for run_id, rid, event_id, action in (
            (1, "shop-2", 0, "continue"),
            (2, "shop-2", 2, "pause"),
            (3, "shop-3", 5, "pause"),
        ):
            results = f'{{"event_id": {event_id}}}'
            conn.execute(
                text(run), {"id": run_id, "rid": rid, "results": results, "action": action}
            )
        conn.execute(
            text(
                "INSERT INTO alarms (id, app, name, state, reason, since, updated_at)"
                " VALUES (1, 'shop', 'p99', 'ALARM', '', 5.0, 5.0)"
            )
        )
    engine.dispose()

    store = open_store(database_url)
    try:
        assert schema_diff(store.engine) == []
        with store.engine.connect() as conn:
            started = dict(conn.execute(text("SELECT id, started_at FROM releases")).all())
            applied = dict(conn.execute(text("SELECT id, applied FROM analysis_runs")).all())
            reported = conn.scalar(text("SELECT reported_release FROM alarms"))
        assert started == {"shop-1": None, "shop-2": 20.0, "shop-3": 40.0}
        assert {k: bool(v) for k, v in applied.items()} == {1: True, 2: True, 3: False}
        assert reported == "shop-3"
    finally:
        store.dispose()


def test_0006_widens_the_metric_counts_and_drops_windows_that_overflowed(
    database_url: str,
) -> None:
    """Counts were 32-bit on PostgreSQL (2^31 overflowed) and unchecked on SQLite (a window
    summed past 2^63 could not be written again). 0006 makes them 64-bit and deletes the
    windows whose counts exceed what ingestion now accepts (only an overflow wrote them)."""
    engine = db.make_engine(database_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db.__file__).with_name("migrations")))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
    insert = text(
        "INSERT INTO metric_windows (id, app, function, version, channel, start, requests,"
        " errors, histogram) VALUES (:id, 'shop', 'api', :version, 'canary', 10, :requests,"
        " 0, '{}')"
    )
    poisoned = 2**62 if engine.dialect.name == "sqlite" else 2**31 - 1
    with engine.begin() as conn:
        conn.execute(insert, {"id": 1, "version": "v1", "requests": 5})
        conn.execute(insert, {"id": 2, "version": "v2", "requests": poisoned})
    engine.dispose()

    store = open_store(database_url)
    try:
        assert current_revision(store.engine) == head_revision()
        assert schema_diff(store.engine) == []
        columns = {
            c["name"]: c["type"] for c in inspect(store.engine).get_columns("metric_windows")
        }
        for name in ("requests", "errors"):
            assert isinstance(columns[name], BigInteger), columns[name]
        with store.engine.begin() as conn:
            rows = dict(conn.execute(text("SELECT version, requests FROM metric_windows")).all())
            assert rows == ({"v1": 5} if poisoned > MAX_COUNT else {"v1": 5, "v2": poisoned})
            conn.execute(insert, {"id": 3, "version": "v3", "requests": MAX_COUNT})
            wide = conn.scalar(text("SELECT requests FROM metric_windows WHERE id = 3"))
        assert wide == MAX_COUNT
    finally:
        store.dispose()
