"""Reach the real servers the tests need (PostgreSQL, Redis, NATS, RabbitMQ) on 127.0.0.1.

On a laptop without them, tests that need one skip with the reason; with
``COALMINE_REQUIRE_SERVICES=1`` (as `.ci/run` sets) they fail instead.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG_ADMIN_DSN = os.environ.get("COALMINE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
PORTS = {"postgresql": 5432, "redis": 6379, "nats": 4222, "rabbitmq": 5672}


def required() -> bool:
    return os.environ.get("COALMINE_REQUIRE_SERVICES") == "1"


def reachable(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def need(service: str) -> None:
    """Skip (or, when services are required, fail) unless ``service`` answers."""
    port = PORTS[service]
    if reachable(port):
        return
    message = f"{service} is not reachable on 127.0.0.1:{port}"
    if required():
        pytest.fail(message + " and COALMINE_REQUIRE_SERVICES=1")
    pytest.skip(message + " (start it, or see .ci/run)")


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test; dropped afterwards."""
    need("postgresql")
    import psycopg

    name = f"coalmine_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    try:
        yield f"postgresql+psycopg://{base.split('://', 1)[1]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def child_env(**extra: str) -> dict[str, str]:
    """The environment for coalmine subprocesses, with bytecode cached outside the tree.

    Where PYTHONDONTWRITEBYTECODE is set (it is on the development machines),
    every child process would compile SQLAlchemy, pydantic and alembic afresh:
    seconds per start on a busy machine. Cached files are checked against
    their sources, so they are never stale.
    """
    import tempfile
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(
        Path(tempfile.gettempdir()) / f"coalmine-test-pycache-{os.getuid()}"
    )
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env
