"""Smoke test of bench/streams.py: a quick run ends with its JSON line.

Only the shape of the output is checked; speed is never asserted in unit tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.services import child_env, need

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "streams.py"
BROKERS = ("nats", "redis", "memory")
FIELDS = ("overhead_us_per_record", "ratio")


def test_quick_run_ends_with_the_json_line() -> None:
    need("nats")
    need("redis")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=child_env(),
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) > 1, proc.stderr  # a table, then the JSON line
    out = json.loads(lines[-1])
    assert list(out)[:4] == ["bench", *BROKERS]
    assert out["bench"] == "streams"
    for broker in BROKERS:
        result = out[broker]
        assert isinstance(result, dict), (broker, result)
        for key in FIELDS:
            value = result[key]
            assert isinstance(value, int | float), (broker, key, value)
            assert not isinstance(value, bool), (broker, key)
        assert result["ratio"] > 0, (broker, result)
