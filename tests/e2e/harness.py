"""Run `coalmine serve` and the CLI as real processes, and await what they do.

Waits are on events (a log line, a server-sent event), each with a deadline,
never on fixed sleeps.
"""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import free_port
from tests.services import child_env

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "cm_e2e_admin_token_0123456789abcdef"


class Server:
    """`coalmine serve` in a subprocess on a free port."""

    def __init__(
        self, database_url: str, *, interval: float = 0.1, args: Sequence[str] = ()
    ) -> None:
        self.database_url = database_url
        self.interval = interval
        self.args = tuple(args)
        """more options of `coalmine serve` (e.g. ``--no-controller``)"""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[str] | None = None
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []

    def start(self, timeout: float = 30.0) -> Server:
        """Start the process and wait until it listens."""
        return self.spawn().ready(timeout)

    def spawn(self) -> Server:
        """Start the process without waiting (`ready` waits): replicas start side by side."""
        env = child_env(COALMINE_BOOTSTRAP_TOKEN=TOKEN)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "coalmine.cli",
                "serve",
                "--port",
                str(self.port),
                "--database-url",
                self.database_url,
                "--interval",
                str(self.interval),
                *self.args,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()
        return self

    def ready(self, timeout: float = 30.0) -> Server:
        """Wait until the spawned process listens."""
        # uvicorn logs "Application startup complete" before it binds the socket;
        # this line comes once it listens (a client connecting in between was refused)
        self.wait_for_line("Uvicorn running on", timeout)
        return self

    def _drain(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line.rstrip())
            self.lines.put(line)

    def wait_for_line(self, needle: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {needle!r} in {timeout}s; log:\n" + "\n".join(self.log))
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if needle in line:
                return line

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, as a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._close()

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self._drainer.join(timeout=10)
            self.proc.stdout.close()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = child_env(COALMINE_URL=self.url, COALMINE_TOKEN=TOKEN)
        proc = subprocess.run(
            [sys.executable, "-m", "coalmine.cli", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"coalmine {' '.join(args)} -> {proc.returncode}\n{proc.stderr}")
        return proc

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )

    def watch(self, app: str) -> Watcher:
        """Start following the app's routing stream in the background."""
        return Watcher(self, app)

    def await_snapshot(
        self, app: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0
    ) -> dict[str, Any]:
        """Follow the app's routing stream until a snapshot satisfies ``predicate``."""
        with self.watch(app) as watcher:
            return watcher.wait_for(predicate, timeout)


class Watcher:
    """Every snapshot a server pushes on one app's routing stream, as it arrives."""

    def __init__(self, server: Server, app: str) -> None:
        self.snapshots: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._client = server.api()
        self._path = f"/v1/apps/{app}/routing/stream"
        self._connected = threading.Event()
        self.ended: str | None = None
        """why the stream ended, once it has (its status, or the error)"""
        self._socket: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._connected.wait(timeout=30):
            raise AssertionError(f"could not open {self._path}")

    def _run(self) -> None:
        try:
            with self._client.stream("GET", self._path, timeout=httpx.Timeout(30, read=None)) as r:
                self._socket = r.extensions["network_stream"].get_extra_info("socket")
                if r.status_code != 200:
                    self.ended = f"answered {r.status_code}: {r.read()[:500]!r}"
                    return
                self._connected.set()
                data: list[str] = []
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        with self._cond:
                            self.snapshots.append(json.loads("\n".join(data)))
                            self._cond.notify_all()
                        data = []
            self.ended = "the server ended the stream"
        except (httpx.HTTPError, OSError) as exc:
            # the server went away (killed on purpose), the watcher closed, or the
            # stream could not be opened: kept, so a failed wait says which
            self.ended = f"{type(exc).__name__}: {exc}"
        finally:
            self._connected.set()
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0
    ) -> dict[str, Any]:
        """The first snapshot (seen so far or yet to come) that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for snap in self.snapshots:
                    if predicate(snap):
                        return snap
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    seen = [
                        (
                            (s.get("release") or {}).get("id"),
                            (s.get("release") or {}).get("phase"),
                            (s.get("release") or {}).get("exposure"),
                        )
                        for s in self.snapshots
                    ]
                    why = f"; the stream ended: {self.ended}" if self.ended else ""
                    raise AssertionError(f"no matching snapshot in {timeout}s; saw {seen}{why}")
                self._cond.wait(timeout=left)

    def close(self) -> None:
        # The reader thread is blocked reading the stream: closing the client alone would
        # not end that read (nor the connection, which the server then waits for when it
        # stops); shutting the socket down does.
        sock = self._socket
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)
        self._client.close()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
