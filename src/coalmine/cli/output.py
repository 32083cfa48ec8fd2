"""Shared output helpers for the CLI: JSON for scripts, rich for people."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from rich.console import Console

__all__ = ["ago", "console", "err_console", "pct", "print_json", "when"]

console = Console()
err_console = Console(stderr=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def pct(bp: int | None) -> str:
    return "-" if bp is None else f"{bp / 100:g}%"


def when(ts: float | None) -> str:
    """A Unix time as ISO 8601 in UTC to the second (``2026-12-05T21:30:00Z``)."""
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def ago(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "-"
    delta = (now if now is not None else time.time()) - ts
    future = delta < 0
    delta = abs(delta)
    if delta < 90:
        text = f"{delta:.0f}s"
    elif delta < 5400:
        text = f"{delta / 60:.0f}m"
    else:
        text = f"{delta / 3600:.1f}h"
    return f"in {text}" if future else f"{text} ago"
