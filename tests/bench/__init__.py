"""Smoke tests of the bench/ scripts: each runs quickly and ends with its JSON line.

Speed is never asserted here (a bench prints it); only the output's shape,
and properties that are counts rather than times.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.services import child_env

BENCH = Path(__file__).resolve().parents[2] / "bench"


def run_bench(script: str, *args: str, timeout: float = 120, min_lines: int = 2) -> dict[str, Any]:
    """Run ``bench/<script>`` with ``args``; its last line, parsed (the JSON line).

    Fails when it exits non-zero or prints fewer than ``min_lines`` lines (a
    table comes before the JSON line).
    """
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=child_env(),
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) >= min_lines, proc.stdout + proc.stderr
    out: dict[str, Any] = json.loads(lines[-1])
    return out
