"""Smoke test of bench/lambda_metrics.py: it runs against a real `coalmine serve`, flushes in
the background, and every recorded request reaches the control plane exactly once."""

from __future__ import annotations

from tests.bench import run_bench


def test_the_bench_runs_and_every_request_arrives_once() -> None:
    out = run_bench(
        "lambda_metrics.py", "--calls", "400", "--pause", "0.01", "--interval", "0.05",
        min_lines=8,
    )  # fmt: skip
    assert out["bench"] == "lambda_metrics"
    assert out["flushes"] >= 2
    assert out["requests_stored"] == out["requests_recorded"] == 2 * (400 + 200)
    assert out["emf_line_us"] > 0
    assert out["emf_aggregated_us"] > 0
