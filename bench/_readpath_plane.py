"""The control plane bench/readpath.py reads from, and the releases that keep it writing.

`store_url` gives a fresh store (an SQLite file in the run's folder, or a new
PostgreSQL database dropped afterwards); `serve` runs ``coalmine serve`` on
it (the rollout controller in the same process, signing keys set, as in
production); `Plane` applies the app and makes its keys over HTTP; `Releases`
is a thread that keeps one release after another running, each stepping
exposure every second (the controller writing to the store) until stopped.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from _errors import BenchError
from _procs import Server, started

__all__ = [
    "APP",
    "DatabaseCounter",
    "FUNCTION",
    "PG_ADMIN_ENV",
    "SIGNING_KEYS",
    "TOKEN",
    "Plane",
    "Releases",
    "serve",
    "store_url",
]

APP, FUNCTION = "food-ordering", "place-order"
TOKEN = "cm_readpath_admin_token_0123456789abcdef"
SIGNING_KEYS = "rp1:readpath-bench-signing-secret-0123456789"
PG_ADMIN_ENV = "COALMINE_BENCH_PG"
_PG_ADMIN_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"

# the example app (examples/food_ordering), releases stepping every second
SPEC = """\
app: food-ordering
functions:
  place-order:
    current: v1
    versions:
      v1: examples.food_ordering.place_order_v1:handler
      v2: examples.food_ordering.place_order_v2:handler
  notify-user:
    current: v1
    versions:
      v1: examples.food_ordering.notify_user_v1:handler
      v2: examples.food_ordering.notify_user_v2:handler
release:
  route_mode: user
"""
STRATEGY = ", ".join(f"{p}%:1s" for p in range(5, 100, 5)) + ", 100%"
"""19 steps of a second each, then promotion: exposure changes every second"""


@contextmanager
def store_url(kind: str, folder: Path) -> Iterator[str]:
    """A fresh, empty store of ``kind`` (``sqlite`` or ``postgresql``) for one run."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'readpath.db'}"
        return
    import psycopg

    admin = os.environ.get(PG_ADMIN_ENV, _PG_ADMIN_DEFAULT)
    name = f"coalmine_bench_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise BenchError(
            f"cannot create a PostgreSQL database through {admin} ({exc});"
            f" set {PG_ADMIN_ENV} to a server's admin URL, or run with --stores sqlite"
        ) from None
    base = admin.rsplit("/", 1)[0].split("://", 1)[1]
    try:
        yield f"postgresql+psycopg://{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def serve(database_url: str, port: int, folder: Path, name: str) -> Iterator[Server]:
    """``coalmine serve`` (API and controller, one process) on ``port`` until the block ends."""
    env = dict(
        os.environ,
        COALMINE_BOOTSTRAP_TOKEN=TOKEN,
        COALMINE_SIGNING_KEYS=SIGNING_KEYS,
        PYTHONUNBUFFERED="1",
    )
    cmd = [sys.executable, "-m", "coalmine.cli", "serve", "--port", str(port)]
    cmd += ["--database-url", database_url, "--log-level", "warning"]
    saved = dict(os.environ)
    os.environ.update(env)  # started() passes this process's environment on
    try:
        with started(f"coalmine serve ({name})", cmd, port, (folder / f"serve-{name}.out",)) as s:
            yield s
    finally:
        os.environ.clear()
        os.environ.update(saved)


class DatabaseCounter:
    """The transactions PostgreSQL has finished in the bench's database (None on SQLite).

    PostgreSQL's statistics lag by up to a second (backends report them at
    most once a second), so a count over a 5-second run is close, not exact.
    """

    def __init__(self, database_url: str) -> None:
        self.dsn: str | None = None
        if database_url.startswith("postgresql"):
            self.dsn = "postgresql://" + database_url.split("://", 1)[1]

    def count(self) -> int | None:
        if self.dsn is None:
            return None
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database"
                " WHERE datname = current_database()"
            ).fetchone()
        return None if row is None else int(row[0]) - 1  # this one


class Plane:
    """The API of the server under test, as its admin."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        r = self.client.request(method, path, **kwargs)
        if r.status_code >= 300:
            raise BenchError(f"{method} {path} answered {r.status_code}: {r.text[:500]}")
        return r.json() if r.content else None

    def set_up(self) -> dict[str, str]:
        """Apply the app; return its browser and sdk keys."""
        self.call("POST", "/v1/apply", content=SPEC, headers={"Content-Type": "application/yaml"})
        return {
            role: self.call(
                "POST", "/v1/tokens", json={"name": f"bench-{role}", "role": role, "app": APP}
            )["token"]
            for role in ("browser", "sdk")
        }

    def revision(self) -> int:
        """The app's routing revision: it moves with every change the read paths must show."""
        return int(self.call("GET", f"/v1/apps/{APP}")["revision"])

    def close(self) -> None:
        self.client.close()


class Releases(threading.Thread):
    """One release after another, each stepping exposure every second, until `stop`."""

    def __init__(self, port: int) -> None:
        super().__init__(name="readpath-releases", daemon=True)
        self.plane = Plane(port)
        self.done = threading.Event()
        self.started_releases = 0
        self.error: str | None = None

    def run(self) -> None:
        try:
            while not self.done.is_set():
                current = self.plane.call("GET", f"/v1/apps/{APP}")
                fn = next(f for f in current["functions"] if f["name"] == FUNCTION)
                other = "v1" if fn["current_version"] == "v2" else "v2"
                release = self.plane.call(
                    "POST",
                    f"/v1/apps/{APP}/releases",
                    json={"candidate": {FUNCTION: other}, "strategy": STRATEGY},
                )
                self.started_releases += 1
                while not self.done.wait(0.5):
                    phase = self.plane.call("GET", f"/v1/releases/{release['id']}")["phase"]
                    if phase in ("promoted", "rolled_back", "failed"):
                        break
        except (BenchError, httpx.HTTPError, StopIteration, KeyError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.plane.close()

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=30)
        if self.error is not None:
            raise BenchError(f"the releases driving the writes failed: {self.error}")

    def wait_running(self, timeout: float = 30) -> None:
        """Until the first release is exposed to users (the controller took its first step)."""
        deadline = time.monotonic() + timeout
        plane = Plane(int(self.plane.url.rsplit(":", 1)[1]))
        try:
            while time.monotonic() < deadline:
                if self.error is not None:
                    raise BenchError(f"the releases driving the writes failed: {self.error}")
                snapshot = plane.call("GET", f"/v1/apps/{APP}/routing")
                if (snapshot.get("release") or {}).get("exposure", 0) > 0:
                    return
                time.sleep(0.05)
        finally:
            plane.close()
        raise BenchError(f"no release of {APP} was exposed within {timeout} s")
