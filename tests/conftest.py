"""Shared fixtures: database URLs for both stores, backed by real servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg_cluster import PgCluster, private_cluster
from tests.services import fresh_pg_database


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'coalmine.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Run a test once on SQLite and once on the real PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'coalmine.db'}"
    else:
        with fresh_pg_database() as url:
            yield url


@pytest.fixture(scope="module")
def _private_pg() -> Iterator[PgCluster]:
    with private_cluster() as pg:
        yield pg


@pytest.fixture
def private_pg(_private_pg: PgCluster) -> PgCluster:
    """A PostgreSQL cluster of the module's own (never the shared server), which a test may
    stop, crash and start again; running at the start of each test (`tests.pg_cluster`)."""
    if not _private_pg.running:  # an earlier test failed while it was down
        _private_pg.start()
    return _private_pg
