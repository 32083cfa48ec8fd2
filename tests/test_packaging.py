"""The base install stays light, public names are re-exported, missing extras say what to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

import coalmine
import coalmine.core
from coalmine._extras import MissingExtraError, require
from tests.core.test_public_api import _check

HEAVY = ("typer", "rich", "fastapi", "sqlalchemy", "scipy", "opentelemetry", "pydantic", "boto3")


def test_importing_coalmine_loads_no_server_dependency() -> None:
    code = (
        "import sys, coalmine, coalmine.core;"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert out == "", f"the base import pulled in {out}"


def test_top_level_all_is_sorted_and_resolves() -> None:
    _check(coalmine)
    # everything core exports is reachable from the top level
    assert set(coalmine.core.__all__) <= set(coalmine.__all__)


def test_missing_extra_names_the_extra() -> None:
    with pytest.raises(MissingExtraError, match=r"pip install 'coalmine\[nats\]'"):
        require("coalmine_no_such_module_for_test", "nats")
    assert require("json", "cli").__name__ == "json"
