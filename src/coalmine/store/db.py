"""Engines, sessions and migrations: SQLite by default, PostgreSQL for several replicas.

`open_store(url)` returns a ready `Store`: the schema is brought to the
latest Alembic revision on start (never ``create_all``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["DEFAULT_DATABASE_URL", "Store", "database_url", "migrate", "open_store"]

DEFAULT_DATABASE_URL = "sqlite:///coalmine.db"
_MIGRATIONS = Path(__file__).with_name("migrations")
_MIGRATION_LOCK = int.from_bytes(
    hashlib.sha256(b"coalmine-migrate").digest()[:8], "big", signed=True
)
"""PostgreSQL advisory lock key held while migrating (a signed int64)."""


def database_url(explicit: str | None = None) -> str:
    """The URL to use: explicit, else ``COALMINE_DATABASE_URL``, else ./coalmine.db."""
    return explicit or os.environ.get("COALMINE_DATABASE_URL") or DEFAULT_DATABASE_URL


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_autocommit_driver(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite opens transactions lazily (only before a write), so the reads of
    # one unit of work could each see a different commit. Take over: every
    # transaction is an explicit BEGIN IMMEDIATE (see _sqlite_begin).
    dbapi_conn.isolation_level = None


_READ_ONLY = "coalmine_read_only"
"""an execution option: this transaction only reads (`Store.snapshot`)"""


def _sqlite_begin(conn: Any) -> None:
    # IMMEDIATE takes the write lock up front: a unit of work reads one
    # consistent state and cannot fail half-way when it upgrades to a write
    # (readers outside transactions are not blocked in WAL mode). A read-only
    # transaction needs no lock: in WAL mode a deferred BEGIN reads one
    # committed state from its first SELECT on, without waiting for a writer.
    if conn.get_execution_options().get(_READ_ONLY):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


_OWNER_ONLY = 0o600


def _create_owner_only(path: str | None) -> None:
    """Create a new SQLite file readable and writable by its owner only.

    The store holds hook credentials (their ``Authorization`` headers); sqlite3
    would create the file with the umask's mode (often world-readable). SQLite
    gives its ``-wal`` and ``-shm`` files the database file's mode. An existing
    file, and the directory, keep the modes their owner gave them.
    """
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _OWNER_ONLY)
    except OSError:  # it exists, or its directory does not: sqlite3 says which on open
        return
    os.close(fd)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        _create_owner_only(engine.url.database)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "connect", _sqlite_autocommit_driver)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def migrate(engine: Engine) -> None:
    """Bring the schema to the latest revision (idempotent, safe on every start)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Replicas that start together take turns: one migrates, the others then find
            # the schema at head (without the lock, two CREATE TABLEs collide).
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


@dataclass(frozen=True)
class Store:
    """A migrated database and its session factory."""

    url: str
    engine: Engine
    sessions: sessionmaker[Session]

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commits on success, rolls back on any error."""
        with self.sessions.begin() as session:
            yield session

    @contextmanager
    def snapshot(self) -> Iterator[Session]:
        """A read of several tables that sees one committed state; it must not write.

        On PostgreSQL a REPEATABLE READ transaction (READ COMMITTED, the
        default, lets each statement see a newer commit); on SQLite a deferred
        transaction, which in WAL mode reads one commit without queueing
        behind the writer (a write in it could fail: it must not write).
        """
        with self.sessions.begin() as session:
            if self.is_postgres:
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            else:
                session.connection(execution_options={_READ_ONLY: True})
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def open_store(url: str | None = None, *, run_migrations: bool = True) -> Store:
    url = database_url(url)
    engine = make_engine(url)
    if run_migrations:
        migrate(engine)
    return Store(url, engine, sessionmaker(engine, expire_on_commit=False))
