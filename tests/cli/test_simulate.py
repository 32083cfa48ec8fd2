"""`coalmine simulate` through the real console entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from coalmine.cli import main
from tests.services import child_env


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coalmine.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=child_env(),
    )


def test_json_output_has_the_documented_shape() -> None:
    proc = run_cli("simulate", "--users", "5", "--requests", "41", "--percent", "10", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for mode in ("user", "request"):
        assert set(out[mode]) >= {
            "exposed_user_fraction",
            "canary_request_fraction",
            "mixed_chain_fraction",
        }
        for value in out[mode].values():
            assert value >= 0
    assert out["params"]["users"] == 5


def test_table_output_makes_the_point(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "--users", "1000", "--requests", "10000", "--trials", "2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "route by user" in out
    assert "requests whose chain mixed versions" in out
    assert "worst trial" in out
    assert "routed by request reached" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["simulate", "--users", "0"], "--users must be at least 1"),
        (["simulate", "--users", "many"], "Invalid value for '--users'"),
        (["simulate", "--bogus"], "No such option: --bogus"),
        (["nope"], "No such command"),
    ],
)
def test_bad_usage_is_one_line_and_exit_code_2(args: list[str], needle: str) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("coalmine: error:")
    assert needle in lines[0]
    assert proc.stdout == ""


def test_no_arguments_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "simulate" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("coalmine ")
