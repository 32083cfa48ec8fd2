"""Processes a bench starts: free loopback ports, servers in their own process group, stopping them.

`started` runs a command in a new session until its block ends and waits for
its port; `stop` always reaps it (SIGTERM to the group, SIGKILL after 5 s).
`terminate` is a SIGTERM handler that exits through the ``finally`` blocks
that stop servers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TypeVar

from _errors import BenchError

__all__ = [
    "START_TIMEOUT",
    "Server",
    "free_port",
    "free_ports",
    "run_bench",
    "started",
    "stop",
    "terminate",
]

A = TypeVar("A")

START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    logs: tuple[Path, ...]
    """its stdout and stderr first, then any log file of its own"""

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of its logs ('' when they are empty)."""
        tails = []
        for log in self.logs:
            try:
                text = log.read_text(errors="replace").strip()
            except OSError:
                continue
            if text:
                tails.append(f"[{log.name}]\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(tails)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL it after 5 s; always reap."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    else:  # the leader is gone; its group may not be
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


@contextmanager
def started(name: str, cmd: Sequence[str], port: int, logs: tuple[Path, ...]) -> Iterator[Server]:
    """Run ``cmd`` in its own process group until the block ends; wait for ``port``.

    Its stdout and stderr go to ``logs[0]``.
    """
    with open(logs[0], "wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(name, port, proc, logs)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise BenchError(
                    f"{name} exited with status {proc.returncode} at start:\n{server.log_tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"{name} did not listen on 127.0.0.1:{port} within {START_TIMEOUT:g} s:"
                        f"\n{server.log_tail()}"
                    ) from None
                time.sleep(0.05)
        yield server
    finally:
        stop(proc)


def terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop servers


def run_bench(run: Callable[[A], int], args: A) -> int:
    """``run(args)`` with SIGTERM unwinding its servers; a BenchError is one line and exit 1."""
    signal.signal(signal.SIGTERM, terminate)
    try:
        return run(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
