"""bench/soak.py in its quick mode: real processes, releases moving, its JSON line."""

from __future__ import annotations

from tests.bench import run_bench


def test_soak_quick_run_sees_no_errors_and_both_releases_end() -> None:
    out = run_bench("soak.py", "--quick", timeout=120)
    assert out["bench"] == "soak"
    assert out["requests"] == 400  # 8 s at 50/s, sent whatever the answers did
    assert out["errors"] == 0
    assert out["expected_errors"] == 4  # every 100th request asks the upstream for a 500
    assert out["first_release"] == "rolled_back"
    assert out["second_release"] == "promoted"
    assert out["canary_answers"]["release 1"] > 0
    assert out["canary_answers"]["release 2"] > 0
    assert out["p99_ms"] > 0
    assert isinstance(out["rss_growth_pct"], float)
