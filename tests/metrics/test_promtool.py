"""``promtool check metrics`` passes on every exposition coalmine serves, with data in each.

The control plane's ``/metrics`` (what it ingested, a release's exposure and
verdicts) and the gateway's (its calls, its flusher's health, refused routing
contexts, Lambda outcomes). The names deprecated by the rename to Prometheus'
conventions are served only when ``COALMINE_METRICS_DEPRECATED_NAMES=1``:
that exposition is not clean, and the lint says why.
"""

from __future__ import annotations

import subprocess

import pytest

from coalmine.metrics.exposition import DEPRECATED_ENV
from tests.metrics.served import promtool_binary, sample_names, serving

EXPECTED = {
    "control plane": {
        "coalmine_requests_total",
        "coalmine_errors_total",
        "coalmine_request_duration_seconds_bucket",
        "coalmine_request_duration_seconds_sum",
        "coalmine_request_duration_seconds_count",
        "coalmine_release_exposure_ratio",
        "coalmine_release_verdict",
        "coalmine_analysis_runs_total",
        "coalmine_metrics_dropped_windows_total",
        "coalmine_metrics_evicted_series_total",
    },
    "gateway": {
        "coalmine_requests_total",
        "coalmine_errors_total",
        "coalmine_request_duration_seconds_bucket",
        "coalmine_request_duration_seconds_sum",
        "coalmine_request_duration_seconds_count",
        "coalmine_metrics_dropped_windows_total",
        "coalmine_metrics_evicted_series_total",
        "coalmine_metrics_flush_failures_total",
        "coalmine_metrics_rejected_windows_total",
        "coalmine_gateway_tokens_rejected_total",
        "coalmine_lambda_outcomes_total",
    },
}
"""what each exposition must hold samples of, so the lint reads every family with data"""


def lint(promtool: str, text: str) -> list[str]:
    """promtool's complaints about an exposition (none when it exits 0)."""
    proc = subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    problems = (proc.stdout + proc.stderr).strip().splitlines()
    assert (proc.returncode == 0) == (not problems), (proc.returncode, problems)
    return problems


async def test_every_exposition_is_promtool_clean(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    promtool = promtool_binary()
    monkeypatch.delenv(DEPRECATED_ENV, raising=False)
    async with serving(sqlite_url, monkeypatch) as served:
        texts = await served.scrape()
        for where, text in texts.items():
            assert EXPECTED[where] <= sample_names(text), where
            assert lint(promtool, text) == [], f"{where}:\n{text}"

        # the deprecated names: served beside the new ones, and promtool says why they went
        monkeypatch.setenv(DEPRECATED_ENV, "1")
        texts = await served.scrape()
    for where, text in texts.items():
        assert "coalmine_latency_ms_bucket" in sample_names(text), where
        assert lint(promtool, text) == [
            "coalmine_latency_ms metric names should not contain abbreviated units"
        ], where
    assert "coalmine_release_exposure" in sample_names(texts["control plane"])
