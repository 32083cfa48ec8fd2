"""The load-test tools: nginx and wrk, found on the PATH or in sbin, installed when missing.

When either is missing, `tools` runs ``bench/install-tools.sh`` (Debian's
packages, needs root) and exits 1 if that fails; `tool_version` reads the
version a tool prints.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["INSTALL_SCRIPT", "NGINX_VERSION", "WRK_VERSION", "find_tool", "tool_version", "tools"]

INSTALL_SCRIPT = Path(__file__).resolve().parent / "install-tools.sh"


def find_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        candidate = os.path.join(folder, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def tools() -> tuple[str, str]:
    """nginx and wrk, installed by bench/install-tools.sh first when one is missing."""
    nginx, wrk = find_tool("nginx"), find_tool("wrk")
    if nginx and wrk:
        return nginx, wrk
    missing = " and ".join(n for n, p in (("nginx", nginx), ("wrk", wrk)) if not p)
    print(f"{missing} missing: running {INSTALL_SCRIPT.name}", file=sys.stderr)
    proc = subprocess.run(["bash", str(INSTALL_SCRIPT)], stdout=sys.stderr, check=False)
    nginx, wrk = find_tool("nginx"), find_tool("wrk")
    if proc.returncode != 0 or not nginx or not wrk:
        raise SystemExit(
            f"error: {missing} missing and bench/install-tools.sh could not install them"
            f" (exit {proc.returncode}); see its message above"
        )
    return nginx, wrk


NGINX_VERSION, WRK_VERSION = r"nginx/(\S+)", r"wrk (?:debian/)?(\S+)"


def tool_version(cmd: Sequence[str], pattern: str) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    found = re.search(pattern, proc.stdout + proc.stderr)
    return found.group(1) if found else "?"
