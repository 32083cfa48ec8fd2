"""`coalmine apply -f` against a real control plane under uvicorn: the file's versions start
a release, the same file again is unchanged (exit 0), bad files and conflicts change nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from coalmine.cli.app import run
from coalmine.core.machine import Tick
from coalmine.web import create_app
from tests.web.conftest import ADMIN_SECRET, bearer, serve

DOC = """\
app: shop
functions:
  api:
    versions:
      v1: shop.api:handler
      v2: shop.api_v2:handler
    version: {api}
release:
  strategy: Linear10PercentEvery1Minute
"""


@pytest.fixture
def api(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[httpx.Client, object]]:
    monkeypatch.setenv("COALMINE_BOOTSTRAP_TOKEN", ADMIN_SECRET)
    monkeypatch.setenv("COALMINE_TOKEN", ADMIN_SECRET)
    app = create_app(database_url=sqlite_url)
    with serve(app) as base, httpx.Client(base_url=base, headers=bearer(ADMIN_SECRET)) as client:
        monkeypatch.setenv("COALMINE_URL", base)
        yield client, app.state.plane


def _apply(
    capsys: pytest.CaptureFixture[str], path: Path, text: str, *flags: str
) -> tuple[int, str, str]:
    path.write_text(text, encoding="utf-8")
    code = run(["apply", "-f", str(path), *flags])
    out, err = capsys.readouterr()
    return code, " ".join(out.split()), err.strip()


def test_apply_releases_the_files_versions_then_is_unchanged(
    api: tuple[httpx.Client, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client, plane = api
    path = tmp_path / "coalmine.yaml"
    code, out, _ = _apply(capsys, path, DOC.format(api="v1"))
    assert code == 0
    assert "app shop: did" in out
    assert "set api current version v1" in out

    code, out, _ = _apply(capsys, path, DOC.format(api="v2"))
    assert code == 0
    assert (
        "start release shop-1: api v1->v2 (strategy Linear10PercentEvery1Minute, route mode user)"
        in out
    )
    assert out.endswith("follow it: coalmine release status shop-1 --watch")

    code, out, _ = _apply(capsys, path, DOC.format(api="v2"))
    assert code == 0
    assert out == (
        "app shop: unchanged (the store holds what the file says) note: release shop-1"
        " (pending, exposure 0%) is moving api v1->v2, as the file says"
    )

    assert client.post("/v1/releases/shop-1/promote", json={}).status_code == 200
    plane.releases.advance("shop-1", Tick(time.time() + 1e6))  # type: ignore[attr-defined]
    assert client.get("/v1/releases/shop-1").json()["phase"] == "promoted"
    code, out, _ = _apply(capsys, path, DOC.format(api="v2"))
    assert (code, out) == (0, "app shop: unchanged (the store holds what the file says)")


def test_bad_files_and_conflicts_change_nothing(
    api: tuple[httpx.Client, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client, _ = api
    path = tmp_path / "coalmine.yaml"
    assert _apply(capsys, path, DOC.format(api="v1"))[0] == 0
    assert _apply(capsys, path, DOC.format(api="v2"))[0] == 0
    before = client.get("/v1/apps/shop").json()

    code, _, err = _apply(capsys, path, DOC.format(api="v2").replace("version:", "verison:"))
    assert code == 2
    assert "verison" in err
    assert len(err.splitlines()) == 1

    grown = DOC.format(api="v3").replace(
        "v2: shop.api_v2:handler", "v2: shop.api_v2:handler\n      v3: shop.api_v3:handler"
    )
    code, _, err = _apply(capsys, path, grown)
    assert code == 1
    assert "has an active release shop-1 (pending) to api v2; the file says api v3" in err
    assert client.get("/v1/apps/shop").json() == before
