"""`coalmine serve` wires its flags into the app it serves (uvicorn itself is not started)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import uvicorn

from coalmine.cli import main
from coalmine.controller.signing_keys import StoredSigningKeys

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


def test_a_bad_deprecated_metric_names_setting_stops_serve_with_one_line(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(uvicorn, "run", lambda app, **_: pytest.fail("served"))
    monkeypatch.setenv("COALMINE_METRICS_DEPRECATED_NAMES", "maybe")
    assert main(["serve", "--no-controller", "--database-url", sqlite_url]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "coalmine: error: invalid COALMINE_METRICS_DEPRECATED_NAMES 'maybe': use 1 (also serve"
        " the metric names deprecated by the rename to Prometheus' conventions) or 0 (only the"
        " new names)"
    ]


def test_the_deprecated_metric_names_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    monkeypatch.setenv("COALMINE_METRICS_DEPRECATED_NAMES", "1")
    with TestClient(_served(monkeypatch, sqlite_url)) as client:
        scraper = client.post(
            "/v1/tokens",
            json={"name": "prometheus", "role": "scraper"},
            headers={"Authorization": "Bearer cm_serve-test-admin-0123456789"},
        )
        assert scraper.status_code in (200, 201), scraper.text
        r = client.get("/metrics", headers={"Authorization": f"Bearer {scraper.json()['token']}"})
        assert r.status_code == 200
        assert "# TYPE coalmine_latency_ms histogram" in r.text
        assert "# TYPE coalmine_request_duration_seconds histogram" in r.text


def test_the_first_start_says_how_to_share_the_signing_keys_once(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("COALMINE_SIGNING_KEYS", raising=False)
    app = _served(monkeypatch, sqlite_url, "--port", "8711")
    first = capsys.readouterr().err
    assert (
        'export COALMINE_SIGNING_KEYS="$(coalmine signing-keys --url http://127.0.0.1:8711)"'
        in (first)
    )
    stored = StoredSigningKeys(app.state.plane.store).read()
    assert stored is not None
    assert stored.split(":", 1)[1] not in first  # the command is shown, never the secret
    _served(monkeypatch, sqlite_url)
    assert "COALMINE_SIGNING_KEYS" not in capsys.readouterr().err  # never again
    # keys given in the environment win: none is made, nothing is said
    monkeypatch.setenv("COALMINE_SIGNING_KEYS", "e1:env-secret-0123456789abcdef")
    fresh = sqlite_url.replace("coalmine.db", "fresh.db")
    app = _served(monkeypatch, fresh)
    assert "signing-keys" not in capsys.readouterr().err
    assert StoredSigningKeys(app.state.plane.store).read() is None
