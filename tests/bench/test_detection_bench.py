"""Smoke test of bench/detection.py: it runs offline and ends with its JSON line.

Only the shape of the output is checked; detection rates and speed are never
asserted in unit tests (they are the bench's to report).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "detection.py"
JUDGES = ("coalmine", "alias_alarm", "kayenta")
REGRESSIONS = ("p99x1.5", "errors+2pp", "tail_only")


def _rate(value: object) -> None:
    assert isinstance(value, float | int), value
    assert not isinstance(value, bool)
    assert 0 <= value <= 1, value


def test_quick_run_ends_with_the_json_line() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--jobs", "1"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) > 5, proc.stdout  # a table came first
    out = json.loads(lines[-1])
    assert list(out)[:5] == [
        "bench",
        "trials",
        "detection_rate",
        "median_canary_requests",
        "false_rollback_rate",
    ]
    assert out["bench"] == "detection"
    assert out["trials"] == 4
    for judge in JUDGES:
        assert set(out["detection_rate"][judge]) >= set(REGRESSIONS)
        for scenario in REGRESSIONS:
            _rate(out["detection_rate"][judge][scenario])
            n = out["median_canary_requests"][judge][scenario]
            assert n is None or (isinstance(n, float | int) and n > 0)
        _rate(out["false_rollback_rate"][judge])
        for rate in out["innocent_rollback_rate"][judge].values():
            _rate(rate)
