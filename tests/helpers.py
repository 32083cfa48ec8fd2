"""Small helpers shared by the test packages: a free loopback port and a hand-moved clock.

Imported by tests of every layer, so it imports nothing of coalmine and no
third-party package.
"""

from __future__ import annotations

import socket

__all__ = ["T0", "FakeClock", "free_port"]

T0 = 1_700_000_000.0
"""Where a `FakeClock` starts unless told otherwise (a multiple of 10: a window boundary)."""


def free_port() -> int:
    """A loopback port free when asked (nothing holds it afterwards)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class FakeClock:
    """A clock the test moves by hand: call it for the time, set ``now`` or `advance` it."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now
