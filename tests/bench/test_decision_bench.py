"""Smoke test of bench/decision.py: it runs offline and ends with its JSON line.

Only the shape of the output is checked; speed is never asserted in unit tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "decision.py"
REQUIRED = ("coalmine_ns", "floor_ns", "launchdarkly_ns", "unleash_ns")


def test_quick_run_ends_with_the_json_line() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json-only"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr
    out = json.loads(lines[-1])
    assert list(out)[:5] == ["bench", *REQUIRED]
    assert out["bench"] == "decision"
    for key in REQUIRED:
        value = out[key]
        assert isinstance(value, int | float), (key, value)
        assert not isinstance(value, bool), key
        assert value > 0, (key, value)
