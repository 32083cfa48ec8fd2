"""A private PostgreSQL cluster for one test module: a test may stop, crash and restart it.

The shared server on 127.0.0.1:5432 serves every test and other work, so a
test that takes PostgreSQL down runs its own: `private_cluster` runs
``initdb`` in a temporary directory, starts ``postgres`` on a free loopback
port (its unix socket in that directory too), and on exit stops it and
removes the directory, however the test ended.

The server binaries come from ``COALMINE_PG_BIN``, else the newest
``/usr/lib/postgresql/*/bin`` (Debian's layout), else ``PATH``. Without them
a test skips, saying so; with ``COALMINE_REQUIRE_SERVICES=1`` it fails
instead (the convention of `tests.services`). PostgreSQL refuses to run as
root: as root the binaries run as the ``postgres`` user (``runuser``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, NoReturn

import pytest

from tests.helpers import free_port
from tests.services import required

__all__ = ["PgCluster", "find_bin_dir", "private_cluster", "process_alive"]

StopMode = Literal["fast", "immediate"]
"""``fast`` ends sessions cleanly (a planned stop), ``immediate`` is a crash"""
_TOOLS = ("initdb", "pg_ctl", "postgres")
_DEBIAN = Path("/usr/lib/postgresql")
"""where Debian installs each major version's server binaries (``<version>/bin``)"""
_START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it


def find_bin_dir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, or None."""
    explicit = os.environ.get("COALMINE_PG_BIN")
    candidates = [Path(explicit)] if explicit else []
    candidates += sorted(
        _DEBIAN.glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).parent)
    for directory in candidates:
        if all((directory / tool).is_file() for tool in _TOOLS):
            return directory
    return None


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs; an exited process its parent has not reaped yet (a zombie:
    an orphaned postmaster waits for init) does not."""
    if not Path("/proc").is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _unavailable(message: str) -> NoReturn:
    if required():
        pytest.fail(message + " and COALMINE_REQUIRE_SERVICES=1")
    pytest.skip(message)


class PgCluster:
    """One PostgreSQL cluster in ``root`` on ``127.0.0.1:port``; see the module docstring."""

    def __init__(self, bin_dir: Path, root: Path, run_as: str | None) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.run_as = run_as
        self.port = 0

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        prefix = ["runuser", "-u", self.run_as, "--"] if self.run_as else []
        proc = subprocess.run(
            [*prefix, str(self.bin_dir / tool), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} -> {proc.returncode}\n{proc.stdout}{proc.stderr}"
                f"\n{self.server_log()}"
            )

    def server_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def init(self) -> None:
        # --no-sync: a throw-away cluster need not survive a power cut
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "-E", "UTF8", "--no-sync")  # fmt: skip

    def start(self) -> None:
        """Start (or start again, on the same port) and wait until it accepts connections."""
        options = (
            f"-c listen_addresses=127.0.0.1 -k {self.root}"
            # fsync off is safe for a crash of the server process (the kernel keeps what
            # was written); it only risks a power cut, which no test makes
            " -c fsync=off -c full_page_writes=off"
        )
        ports = [self.port] if self.port else [free_port() for _ in range(_START_ATTEMPTS)]
        for attempt, port in enumerate(ports, 1):
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w",
                          "-t", "60", "-o", f"-p {port} {options}", "start")  # fmt: skip
            except RuntimeError:
                if attempt == len(ports):
                    raise
                continue
            self.port = port
            return

    def stop(self, mode: StopMode = "fast") -> None:
        """``pg_ctl stop -m mode`` (see `StopMode`), waiting until the server is gone."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def _postmaster(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    @property
    def running(self) -> bool:
        return self._postmaster() is not None

    def kill(self) -> None:
        """Stop at once whatever runs (teardown): ``immediate``, else SIGQUIT the postmaster
        (its children exit with it), waiting for it to be gone."""
        pid = self._postmaster()
        if pid is None:
            return
        try:
            self.stop("immediate")  # nothing in it is worth a checkpoint
            return
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not process_alive(pid):
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of ``database`` over TCP."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextmanager
def private_cluster() -> Iterator[PgCluster]:
    """A running private cluster; stopped and deleted on exit (skips without the binaries)."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        _unavailable(
            "no PostgreSQL server binaries (initdb, pg_ctl, postgres) in COALMINE_PG_BIN,"
            " /usr/lib/postgresql/*/bin or PATH (install postgresql)"
        )
    run_as: str | None = None
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        if shutil.which("runuser") is None:
            _unavailable("running as root without runuser to start PostgreSQL as 'postgres'")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no 'postgres' user to run PostgreSQL as")
        run_as = "postgres"
    root = Path(tempfile.mkdtemp(prefix="coalmine-pg-"))
    cluster = PgCluster(bin_dir, root, run_as)
    try:
        if run_as is not None:
            os.chown(root, owner.pw_uid, owner.pw_gid)
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.kill()
        shutil.rmtree(root, ignore_errors=True)
