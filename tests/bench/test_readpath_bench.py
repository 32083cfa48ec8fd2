"""Smoke test of bench/readpath.py: a quick run over both stores ends with a JSON line per store.

wrk comes from Debian's packages through bench/install-tools.sh (the gateway
bench's smoke test says how a missing tool skips, or fails on CI). Only the
shape of the output and what does not depend on speed are checked: every
read path answered, the releases kept writing during the runs (the app's
revision moved), and the polling SDK got mostly 304s.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.test_gateway_bench import _ensure_tools
from tests.services import PG_ADMIN_DSN, child_env, need

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "readpath.py"
FIRST = [
    "bench",
    "healthz_rps",
    "discovery_rps",
    "discovery_p99_ms",
    "routing_304_rps",
    "routing_304_p99_ms",
    "ofrep_rps",
    "store",
]
NUMBERS = [k for k in FIRST if k.endswith(("_rps", "_ms"))] + [
    "ofrep_p99_ms",
    "ofrep_bulk_rps",
    "routing_rps",
]

pytestmark = pytest.mark.slow


@pytest.mark.timeout(900)
def test_quick_run_ends_with_a_json_line_per_store() -> None:
    _ensure_tools()
    need("postgresql")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
        env=child_env(COALMINE_BENCH_PG=PG_ADMIN_DSN),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    sqlite, postgresql = (json.loads(line) for line in lines[-2:])
    for out, store in ((sqlite, "sqlite"), (postgresql, "postgresql")):
        assert list(out)[: len(FIRST)] == FIRST
        assert (out["bench"], out["store"]) == ("readpath", store)
        for key in NUMBERS:
            value = out[key]
            assert isinstance(value, int | float), (key, value)
            assert not isinstance(value, bool), key
            assert math.isfinite(value), (key, value)
            assert value > 0, (key, value)
        assert out["changes"] > 0, "the releases wrote nothing during the runs"
        assert out["routing_304_share"] > 0.5
    assert sqlite["db_tx_per_s"] is None
    assert postgresql["db_tx_per_s"] >= 0
    text = proc.stdout
    assert text.count("goal: ") == 10
    assert "store: sqlite" in text
    assert text.index("store: sqlite") < text.index("store: postgresql")
    assert "GET /healthz (the floor)" in text
