"""bench/soak.py in its quick mode: real processes, releases moving, its JSON line."""

from __future__ import annotations

from tests.bench import run_bench


def test_soak_quick_run_sees_no_errors_and_both_releases_end() -> None:
    out = run_bench("soak.py", "--quick", timeout=120)
    assert out["bench"] == "soak"
    # 8 s at 50/s, sent whatever the answers did (a few fewer if the client fell behind)
    assert 300 <= out["requests"] <= 400
    assert out["errors"] == 0
    # every 100th request asks the upstream for a 500, and got it
    assert out["expected_errors"] == out["requests"] // 100
    assert out["first_release"] == "rolled_back"
    assert out["second_release"] == "promoted"
    assert out["canary_answers"]["release 1"] > 0
    assert out["canary_answers"]["release 2"] > 0
    assert out["p99_ms"] > 0
    assert isinstance(out["rss_growth_pct"], float)
