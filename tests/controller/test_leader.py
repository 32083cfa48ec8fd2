"""Leader election: a PostgreSQL advisory lock and a file lock beside the SQLite database."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import psycopg
import pytest

from coalmine.controller.leader import (
    LEADER_KEY,
    FileLockLeadership,
    PgAdvisoryLeadership,
    SoleLeadership,
    leadership_for,
)
from coalmine.core.ports import Leadership
from coalmine.store.db import Store, open_store
from tests.controller import closed_port


def test_the_lock_key_is_a_fixed_int64_from_the_name() -> None:
    digest = hashlib.sha256(b"coalmine-controller").digest()
    assert int.from_bytes(digest[:8], "big", signed=True) == LEADER_KEY
    assert -(2**63) <= LEADER_KEY < 2**63


def holds(lead: Leadership) -> bool:
    """``lead.held``, read afresh (not narrowed by an earlier assert)."""
    return lead.held


def test_a_file_lock_has_one_holder_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "db.controller.lock"
    a, b = FileLockLeadership(path), FileLockLeadership(path)
    assert a.try_acquire()
    assert holds(a)
    assert not b.try_acquire()
    assert not holds(b)
    assert a.try_acquire(), "try_acquire is True while held"
    a.release()
    assert not holds(a)
    assert b.try_acquire()
    assert not a.try_acquire()
    b.release()
    b.release()  # idempotent


def test_a_removed_lock_file_is_competed_for_again(tmp_path: Path) -> None:
    path = tmp_path / "db.controller.lock"
    a, b = FileLockLeadership(path), FileLockLeadership(path)
    assert a.try_acquire()
    path.unlink()
    assert b.try_acquire(), "b locks the new file"
    assert not a.try_acquire(), "a notices its file is gone and does not lead beside b"
    b.release()


def test_leadership_for_sqlite_locks_a_file_beside_the_database(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    try:
        lead = leadership_for(store)
        assert isinstance(lead, FileLockLeadership)
        db = Path(sqlite_url.removeprefix("sqlite:///"))
        assert lead.path == db.with_name("coalmine.db.controller.lock")
    finally:
        store.dispose()
    memory = open_store("sqlite://")
    try:
        assert isinstance(leadership_for(memory), SoleLeadership)
    finally:
        memory.dispose()


def test_leadership_for_an_unknown_dialect_says_which() -> None:
    fake = SimpleNamespace(engine=SimpleNamespace(dialect=SimpleNamespace(name="oracle")))
    with pytest.raises(ValueError, match="'oracle'"):
        leadership_for(cast(Store, fake))


def _holders(pg_url: str) -> list[int]:
    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchall()
    return [r[0] for r in rows]


def _terminate(pg_url: str, pid: int) -> None:
    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))


def test_an_advisory_lock_has_one_holder_and_frees_with_its_session(pg_url: str) -> None:
    a, b = PgAdvisoryLeadership(pg_url), PgAdvisoryLeadership(pg_url)
    try:
        assert a.try_acquire()
        assert not b.try_acquire()
        assert a.try_acquire()
        assert a.try_acquire()
        assert len(_holders(pg_url)) == 1, "re-checking does not stack the lock"
        a.release()
        assert not holds(a)
        assert b.try_acquire()
        (pid,) = _holders(pg_url)
        _terminate(pg_url, pid)  # b's session dies, as if its process had
        assert a.try_acquire(), "the lock freed with b's session"
        assert not b.try_acquire(), "b sees its connection died and does not lead"
        assert not holds(b)
        a.release()
        assert b.try_acquire(), "b reconnected and competes again"
    finally:
        a.release()
        b.release()


def test_an_unreachable_server_means_not_leading() -> None:
    lead = PgAdvisoryLeadership(
        f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/x", connect_timeout=1
    )
    assert not lead.try_acquire()
    assert not holds(lead)


def test_a_sqlalchemy_url_becomes_a_libpq_dsn() -> None:
    lead: Any = PgAdvisoryLeadership("postgresql+psycopg://u:p%40ss@db:5433/coal")
    assert lead.dsn == "postgresql://u:p%40ss@db:5433/coal"
    assert PgAdvisoryLeadership("host=db dbname=coal").dsn == "host=db dbname=coal"
