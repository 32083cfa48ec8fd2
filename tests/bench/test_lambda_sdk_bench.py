"""Smoke test of bench/lambda_sdk.py: against a control plane in its own process, the
routed handler really refreshes (304s) and the run ends with its JSON line."""

from __future__ import annotations

from tests.bench import run_bench

TIMES = ("plain_p99_us", "warm_p99_us", "refresh_304_p99_us", "refresh_200_p99_us")


def test_quick_run_ends_with_the_json_line() -> None:
    out = run_bench("lambda_sdk.py", "--n", "300", min_lines=5)
    assert out["bench"] == "lambda_sdk"
    assert out["n"] == 300
    for key in TIMES:
        assert isinstance(out[key], float), key
        assert out[key] > 0, key
