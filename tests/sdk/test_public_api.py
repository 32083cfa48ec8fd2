"""coalmine.sdk: a sorted public surface, and an import that stays in the base install."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import coalmine.sdk
from tests.core.test_public_api import _check

SUBMODULES = sorted(f"coalmine.sdk.{m.name}" for m in pkgutil.iter_modules(coalmine.sdk.__path__))
SERVER_ONLY = (
    "pydantic",
    "fastapi",
    "sqlalchemy",
    "starlette",
    "uvicorn",
    "typer",
    "rich",
    "alembic",
)


def test_sdk_all_is_sorted_and_resolves() -> None:
    _check(coalmine.sdk)
    assert "Client" in coalmine.sdk.__all__


@pytest.mark.parametrize("name", SUBMODULES)
def test_submodule_all(name: str) -> None:
    module = importlib.import_module(name)
    _check(module)
    for attr in module.__all__:
        if attr in coalmine.sdk.__all__:
            assert getattr(coalmine.sdk, attr) is getattr(module, attr), attr


def test_the_sdk_imports_nothing_from_the_server_install() -> None:
    # httpx itself loads rich, click and pygments when they are installed (its
    # command line, httpx[cli]); the base install has none, so only what
    # coalmine.sdk adds on top of httpx is counted.
    code = (
        "import sys, httpx; before = set(sys.modules);"
        "import coalmine.sdk, coalmine;"
        "assert coalmine.Client is coalmine.sdk.Client;"
        "added = set(sys.modules) - before;"
        f"print(','.join(sorted(m for m in added if m.split('.')[0] in {SERVER_ONLY!r}"
        " or m.startswith(('coalmine.web', 'coalmine.controller', 'coalmine.store',"
        " 'coalmine.cli', 'coalmine.gateway', 'coalmine.integrations')))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert out == "", f"importing coalmine.sdk pulled in {out}"


def test_import_coalmine_does_not_load_the_sdk_until_client_is_used() -> None:
    code = (
        "import sys, coalmine;"
        "before = 'coalmine.sdk' in sys.modules or 'httpx' in sys.modules;"
        "coalmine.Client;"
        "print(before, 'coalmine.sdk' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert out == "False True"
