"""The SQLite file holds hook credentials: coalmine creates it readable by its owner only."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from coalmine.store.db import open_store


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The common default umask (022), under which sqlite3 makes files world-readable."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_sqlite_file_and_its_wal_are_owner_only(tmp_path: Path, open_umask: None) -> None:
    db = tmp_path / "coalmine.db"
    tmp_path.chmod(0o751)
    store = open_store(f"sqlite:///{db}")
    try:
        with store.transaction() as s:
            s.execute(text("CREATE TABLE IF NOT EXISTS probe (x INTEGER)"))
            s.execute(text("INSERT INTO probe VALUES (1)"))
        assert mode(db) == 0o600
        for side in (tmp_path / "coalmine.db-wal", tmp_path / "coalmine.db-shm"):
            if side.exists():  # sqlite gives them the database file's mode
                assert mode(side) == 0o600, side
        assert mode(tmp_path) == 0o751  # the directory is left as its owner made it
    finally:
        store.dispose()


def test_an_existing_file_keeps_the_mode_its_owner_gave_it(
    tmp_path: Path, open_umask: None
) -> None:
    db = tmp_path / "shared.db"
    db.touch()
    db.chmod(0o640)
    store = open_store(f"sqlite:///{db}")
    store.dispose()
    assert mode(db) == 0o640
