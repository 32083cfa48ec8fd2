"""The private PostgreSQL cluster helper: it runs, restarts on its port, and leaves nothing."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests import pg_cluster
from tests.pg_cluster import private_cluster, process_alive


def test_a_cluster_restarts_on_its_port_and_leaves_no_process_or_file() -> None:
    with private_cluster() as pg:
        root = pg.root
        url = pg.create_database("helper")
        plain = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(plain) as conn:
            conn.execute("CREATE TABLE kept (n int)")
            conn.execute("INSERT INTO kept VALUES (1)")
            conn.commit()
        port = pg.port
        pg.stop("immediate")  # a crash: recovered from the WAL on start
        assert not pg.running
        pg.start()
        assert pg.port == port
        with psycopg.connect(plain) as conn:
            assert conn.execute("SELECT n FROM kept").fetchall() == [(1,)]
        pid = pg._postmaster()
        assert pid is not None
        assert process_alive(pid)
    assert not process_alive(pid)
    assert not root.exists()


def test_missing_binaries_skip_or_fail_as_services_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(pg_cluster, "_DEBIAN", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("COALMINE_PG_BIN", raising=False)
    monkeypatch.delenv("COALMINE_REQUIRE_SERVICES", raising=False)
    with (
        pytest.raises(pytest.skip.Exception, match="no PostgreSQL server binaries"),
        private_cluster(),
    ):
        pass
    monkeypatch.setenv("COALMINE_REQUIRE_SERVICES", "1")
    with (
        pytest.raises(pytest.fail.Exception, match="COALMINE_REQUIRE_SERVICES=1"),
        private_cluster(),
    ):
        pass
