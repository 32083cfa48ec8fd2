"""Shared fixtures (database URLs for both stores, backed by real servers) and GC pacing."""

from __future__ import annotations

import gc
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


@pytest.hookimpl(trylast=True)  # after the module's fixtures are torn down
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Between test modules, collect and then freeze what is still alive.

    The whole suite runs in one process, and what earlier modules leave alive
    (FastAPI keeps the last 4,096 endpoint callables in a cache, each holding its
    app) grew to 3.5 million objects: a full collection then stopped every thread
    for 1 to 2.7 s at a random moment, and tests that time a reaction (the SDK
    catching up within a second) failed. Frozen objects are never traversed again.
    """
    if nextitem is None or nextitem.path != item.path:
        gc.collect()
        gc.freeze()
