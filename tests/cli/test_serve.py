"""`coalmine serve` wires its flags into the app it serves (uvicorn itself is not started)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import uvicorn

from coalmine.cli import main

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient


def _served(monkeypatch: pytest.MonkeyPatch, sqlite_url: str, *flags: str) -> Any:
    served: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **_: served.append(app))
    monkeypatch.setenv("COALMINE_BOOTSTRAP_TOKEN", "cm_serve-test-admin-0123456789")
    argv = ["serve", "--no-controller", "--database-url", sqlite_url, *flags]
    assert main(argv) == 0
    (app,) = served
    return app


@pytest.mark.parametrize("flags", [(), ("--public-docs",)], ids=["default", "public-docs"])
def test_the_api_docs_are_public_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str, flags: tuple[str, ...]
) -> None:
    app = _served(monkeypatch, sqlite_url, *flags)
    with TestClient(app) as client:
        for path in ("/openapi.json", "/docs"):
            assert client.get(path).status_code == (200 if flags else 401), path
        assert client.get("/v1/apps").status_code == 401


def test_public_docs_from_the_environment(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> None:
    monkeypatch.setenv("COALMINE_PUBLIC_DOCS", "1")
    with TestClient(_served(monkeypatch, sqlite_url)) as client:
        assert client.get("/openapi.json").status_code == 200
