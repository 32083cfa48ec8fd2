"""Leader election: at most one controller replica drives the rollouts at a time.

`coalmine.core.ports.Leadership` is the port; `leadership_for(store)` picks the backend by
database dialect: a PostgreSQL session advisory lock (`PgAdvisoryLeadership`)
or an exclusive ``flock`` beside the SQLite file (`FileLockLeadership`). Both
locks belong to the holder's connection or open file, so they free themselves
when the leader process dies, however it dies. Leadership is an efficiency,
not the safety net: every write of a release is also guarded by optimistic
concurrency in the store, so two controllers that both believe they lead for
a moment still never both make one step.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from coalmine.core.ports import Leadership
from coalmine.store.db import Store

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "LEADER_KEY",
    "FileLockLeadership",
    "PgAdvisoryLeadership",
    "SoleLeadership",
    "leadership_for",
]

log = logging.getLogger(__name__)


def _advisory_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


LEADER_KEY = _advisory_key("coalmine-controller")
"""The PostgreSQL advisory lock key (a signed int64) the controllers compete for."""


class SoleLeadership:
    """The only controller there is (an in-memory SQLite database, tests): always the leader."""

    def __init__(self) -> None:
        self._held = False

    def try_acquire(self) -> bool:
        self._held = True
        return True

    @property
    def held(self) -> bool:
        return self._held

    def release(self) -> None:
        self._held = False


def _libpq_dsn(dsn: str | URL) -> str:
    """A libpq connection string from a SQLAlchemy URL (any driver) or a plain DSN."""
    try:
        url = make_url(dsn)
    except ArgumentError:
        return str(dsn)  # a keyword DSN such as "host=... dbname=..."
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class PgAdvisoryLeadership:
    """Leadership as ``pg_try_advisory_lock(key)`` on a dedicated autocommit connection.

    The lock lives as long as the session: when the leader dies (or its
    connection does), PostgreSQL ends the session and frees the lock for
    another replica. Each `try_acquire` of the holder runs a cheap
    ``SELECT 1``; if the connection is gone, the lead is lost and it
    reconnects and competes again.
    """

    def __init__(self, dsn: str | URL, *, key: int = LEADER_KEY, connect_timeout: int = 5) -> None:
        self.dsn = _libpq_dsn(dsn)
        self.key = key
        self.connect_timeout = connect_timeout
        self._conn: psycopg.Connection[Any] | None = None
        self._held = False
        self._lock = threading.Lock()

    @property
    def held(self) -> bool:
        return self._held

    def try_acquire(self) -> bool:
        import psycopg

        with self._lock:
            if self._held:
                try:
                    assert self._conn is not None
                    self._conn.execute("SELECT 1")
                    return True
                except psycopg.Error as exc:
                    log.warning("leadership: lock connection lost (%s); lead lost", exc)
                    self._drop()
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(
                        self.dsn,
                        autocommit=True,
                        connect_timeout=self.connect_timeout,
                        application_name="coalmine-controller-leader",
                        keepalives=1,
                        keepalives_idle=5,
                        keepalives_interval=2,
                        keepalives_count=3,
                    )
                row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
                self._held = bool(row and row[0])
            except psycopg.Error as exc:
                log.warning("leadership: cannot reach PostgreSQL (%s)", exc)
                self._drop()
            return self._held

    def release(self) -> None:
        import psycopg

        with self._lock:
            if self._held and self._conn is not None:
                try:  # unlock first: closing alone frees the lock only once the server notices
                    self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
                except psycopg.Error as exc:
                    log.debug("leadership: unlock failed (%s); closing frees it", exc)
            self._drop()

    def _drop(self) -> None:
        """Close the lock connection: the session ends and with it the lock."""
        self._held = False
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already broken: nothing left to free
                log.debug("leadership: closing the lock connection failed", exc_info=True)


class FileLockLeadership:
    """Leadership as an exclusive, non-blocking ``flock`` on a file beside the SQLite database.

    The kernel frees the lock when the holder's file is closed, which
    happens when the process dies. A SQLite database is only shared by
    processes on one machine, so a local lock is enough.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._lock = threading.Lock()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        with self._lock:
            if self._fd is not None:
                if self._same_file(self._fd):
                    return True
                log.warning("leadership: lock file %s was removed; competing again", self.path)
                self._drop()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            return True

    def _same_file(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except OSError:
            return False

    def release(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


def leadership_for(store: Store) -> Leadership:
    """The leader election that fits ``store``'s database."""
    dialect = store.engine.dialect.name
    if dialect == "postgresql":
        return PgAdvisoryLeadership(store.engine.url)
    if dialect == "sqlite":
        database = store.engine.url.database
        if not database or database == ":memory:" or database.startswith("file::memory:"):
            return SoleLeadership()  # no other process can open this database
        db = Path(database)
        return FileLockLeadership(db.with_name(db.name + ".controller.lock"))
    raise ValueError(
        f"no leader election for database dialect {dialect!r}: coalmine runs on PostgreSQL or SQLite"
    )
