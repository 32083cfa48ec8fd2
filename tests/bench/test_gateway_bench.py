"""Smoke test of bench/gateway.py: a quick run over real nginx and wrk ends with its JSON line.

nginx and wrk come from Debian's packages through bench/install-tools.sh. When
they are missing and cannot be installed (no root, no apt), the test skips
saying so; with ``COALMINE_REQUIRE_SERVICES=1`` (CI) the install is attempted
and a failure fails the test. Only the shape of the output is checked: speed
is never asserted in unit tests, so the added latencies (a difference of two
noisy percentiles, which can come out at or below zero) need only be numbers.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import child_env, required

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gateway.py"
INSTALL = ROOT / "bench" / "install-tools.sh"
RATES = ("direct_rps", "coalmine_rps", "nginx_rps")
ADDED = ("coalmine_added_p99_ms", "nginx_added_p99_ms")

pytestmark = pytest.mark.slow


def _installed(tool: str) -> bool:
    return shutil.which(tool) is not None or any(
        os.access(os.path.join(folder, tool), os.X_OK)
        for folder in ("/usr/sbin", "/usr/local/sbin", "/sbin")
    )


def _ensure_tools() -> None:
    """nginx and wrk, installed by bench/install-tools.sh if need be; else skip (or fail on CI)."""
    if _installed("nginx") and _installed("wrk"):
        return
    try:
        proc = subprocess.run(
            ["bash", str(INSTALL)], capture_output=True, text=True, timeout=600, check=False
        )
        said = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        ok = proc.returncode == 0
    except (OSError, subprocess.TimeoutExpired) as exc:
        said, ok = f"{type(exc).__name__}: {exc}", False
    if ok and _installed("nginx") and _installed("wrk"):
        return
    message = f"nginx or wrk is missing and bench/install-tools.sh could not install them: {said}"
    if required():
        pytest.fail(message + " (COALMINE_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.mark.timeout(900)
def test_quick_run_ends_with_the_json_line() -> None:
    _ensure_tools()
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--rounds", "2"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=ROOT,
        env=child_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr
    out = json.loads(lines[-1])
    assert list(out)[:6] == ["bench", *RATES, *ADDED]
    assert out["bench"] == "gateway"
    for key in (*RATES, *ADDED):
        value = out[key]
        assert isinstance(value, int | float), (key, value)
        assert not isinstance(value, bool), key
        assert math.isfinite(value), (key, value)
    for key in RATES:
        assert out[key] > 0, (key, out[key])
    assert out["rounds"] == 2
    assert len(out["coalmine_vs_nginx_rps_rounds"]) == len(out["coalmine_added_p99_ms_rounds"]) == 2
    assert all(v > 0 for v in out["coalmine_vs_nginx_rps_rounds"])
    # the table and the goals come before it
    text = proc.stdout
    assert "nginx split_clients" in text
    assert "coalmine gateway" in text
    assert text.count("goal: ") == 3
    # the Lambda row: the gateway invoking Lambda versions, next to the Invoke endpoint
    assert "coalmine gateway -> Lambda" in text
    for key in ("lambda_direct_rps", "lambda_rps", "lambda_added_p99_ms"):
        value = out[key]
        assert isinstance(value, int | float), (key, value)
        assert not isinstance(value, bool), key
        assert math.isfinite(value), (key, value)
    assert out["lambda_direct_rps"] > 0
    assert out["lambda_rps"] > 0
    assert "each of the 2 rounds: gateway x nginx rps" in text
