"""Every environment variable `coalmine serve` reads is listed in its --help (and so in
docs/configuration.md, generated from the same list).

Two checks, since neither alone sees everything: the variables the server
process actually asks for while it starts and serves (``os.environ`` recorded
under a real `coalmine serve` with its controller on, answering requests), and
every ``COALMINE_*`` name written as a string of its own in a module the server
imports (a variable read only on a path the first check does not take).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from coalmine.cli import main
from coalmine.cli.app import app as cli_app
from tests.web.conftest import ADMIN_SECRET, bearer
from tests.web.test_discovery import HTTP_DOC

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

NAME = re.compile(r"COALMINE_[A-Z0-9_]+")

NOT_READ_BY_THE_SERVER = {
    "COALMINE_EMF": "coalmine.metrics.emf is imported for its writer; only the SDK's client"
    " reads the setting (coalmine.sdk.client)",
    "COALMINE_EMF_NAMESPACE": "the same",
}
"""Names the server's modules hold that the server never reads, and why."""

SERVER_MODULES = (
    "coalmine.cli.serve",
    "coalmine.web.app",
    "coalmine.controller.loop",
    "coalmine.controller.hooks",
    "coalmine.controller.webhooks",
    "coalmine.controller.leader",
)


class _Recorded(MutableMapping[str, str]):
    """``os.environ`` that remembers every name asked for."""

    def __init__(self, env: MutableMapping[str, str]) -> None:
        self.env = env
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self.env[key]

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return key in self.env

    def __setitem__(self, key: str, value: str) -> None:
        self.env[key] = value

    def __delitem__(self, key: str) -> None:
        del self.env[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.env)

    def __len__(self) -> int:
        return len(self.env)

    def copy(self) -> dict[str, str]:
        return dict(self.env.items())


def _help() -> str:
    result = CliRunner().invoke(cli_app, ["serve", "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    return result.output


def _listed(text: str) -> set[str]:
    return set(NAME.findall(text))


def test_every_variable_the_running_server_reads_is_in_its_help(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    monkeypatch.setenv("COALMINE_BOOTSTRAP_TOKEN", ADMIN_SECRET)
    recorded = _Recorded(os.environ)
    monkeypatch.setattr(os, "environ", recorded)

    def serve_a_little(app: Any, **_: Any) -> None:
        admin = bearer(ADMIN_SECRET)
        with TestClient(app) as client:
            r = client.post(
                "/v1/apply", content=HTTP_DOC, headers={**admin, "Content-Type": "text/yaml"}
            )
            assert r.status_code == 200, r.text
            r = client.post(
                "/v1/apps/shop/releases",
                json={"candidate": {"api": "v2"}, "strategy": "AllAtOnce"},
                headers=admin,
            )
            assert r.status_code == 201, r.text
            for path in (
                "/healthz",
                "/v1/discovery?app=shop&user=u",
                "/v1/apps/shop/routing",
                "/metrics",
                "/v1/signing-keys",
                "/openapi.json",
            ):
                assert client.get(path, headers=admin).status_code == 200, path

    monkeypatch.setattr(uvicorn, "run", serve_a_little)
    assert main(["serve", "--database-url", sqlite_url, "--interval", "0.05"]) == 0
    asked = {name for name in recorded.asked if NAME.fullmatch(name)}
    # the recorder sees what the server reads outside its options, too
    assert {"COALMINE_SIGNING_KEYS", "COALMINE_BOOTSTRAP_TOKEN"} <= asked, asked
    listed = _listed(_help())
    assert asked - listed == set(), "read by coalmine serve, missing from its --help"
    if any(name.startswith("AWS_") for name in recorded.asked):
        assert "AWS_*" in _help()


def test_every_variable_named_in_the_servers_modules_is_in_its_help() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in SERVER_MODULES)
        + "print('\\n'.join(m for m in sorted(sys.modules) if m.startswith('coalmine')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    assert "coalmine.web.discovery" in loaded
    named: dict[str, set[str]] = {}
    for module in loaded:
        path = importlib.util.find_spec(module).origin  # type: ignore[union-attr]
        assert path is not None
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            value = node.value if isinstance(node, ast.Constant) else None
            if isinstance(value, str) and NAME.fullmatch(value):
                named.setdefault(value, set()).add(module)
    listed = _listed(_help())
    missing = {
        name: sorted(modules)
        for name, modules in named.items()
        if name not in listed and name not in NOT_READ_BY_THE_SERVER
    }
    assert missing == {}, "named by the server's modules, missing from coalmine serve --help"
    assert set(NOT_READ_BY_THE_SERVER) <= set(named), "an exception no module needs any more"
    assert not set(NOT_READ_BY_THE_SERVER) & listed
