"""`coalmine consistency` against a real control plane (and a stand-in gateway)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Annotated

import httpx
import pytest
from fastapi import FastAPI, Header, Response

from coalmine.cli.app import run
from coalmine.cli.consistency import Mismatch, Observation, Report, compare
from coalmine.core.model import Channel
from coalmine.core.routing import evaluate
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.web import create_app
from tests.web.conftest import ADMIN_SECRET, bearer, serve
from tests.web.test_discovery import HTTP_DOC, KEYS


@pytest.fixture
def control_plane(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """A control plane under uvicorn with shop's release at 30%; yields its URL and shop's key."""
    monkeypatch.setenv("COALMINE_BOOTSTRAP_TOKEN", ADMIN_SECRET)
    monkeypatch.delenv("COALMINE_URL", raising=False)
    monkeypatch.delenv("COALMINE_SDK_KEY", raising=False)
    app = create_app(database_url=sqlite_url, signing_keys=KEYS)
    with serve(app) as base, httpx.Client(base_url=base, headers=bearer(ADMIN_SECRET)) as api:
        r = api.post("/v1/apply", content=HTTP_DOC, headers={"Content-Type": "application/yaml"})
        assert r.status_code == 200, r.text
        rel = api.post(
            "/v1/apps/shop/releases",
            json={
                "candidate": {"api": "v2"},
                "strategy": "30%:5m, 100%",
                "targeting": {"always_canary": ["user-3"], "never_canary": ["user-4"]},
            },
        )
        assert rel.status_code == 201, rel.text
        from coalmine.core.machine import Tick

        app.state.plane.releases.advance(rel.json()["id"], Tick(time.time() + 1e6))
        assert api.post("/v1/apps", json={"name": "blog"}).status_code == 201
        key = api.post("/v1/tokens", json={"name": "k", "role": "sdk", "app": "shop"}).json()
        yield base, key["token"]


def gateway(control_plane: str, key: str, lie_for: frozenset[str] = frozenset()) -> FastAPI:
    """A stand-in gateway: routes with core.evaluate and says so in its response headers."""
    data = httpx.get(f"{control_plane}/v1/apps/shop/routing", headers=bearer(key)).json()
    state = RoutingSnapshot.from_dict(data).state
    gw = FastAPI()

    @gw.get("/{function}/")
    def call(function: str, x_user_id: Annotated[str, Header()]) -> Response:
        d = evaluate(state, x_user_id, keyring=None, now=time.time())
        channel = str(d.channel)
        if x_user_id in lie_for:
            channel = "stable" if d.channel is Channel.CANARY else "canary"
        headers = {"x-coalmine-channel": channel, "x-coalmine-version": d.versions[function]}
        return Response("ok", headers=headers)

    return gw


def test_zero_mismatches_for_10000_users(
    control_plane: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    base, key = control_plane
    args = ["consistency", "--app", "shop", "--control-plane", base, "--sdk-key", key]
    start = time.perf_counter()
    assert run([*args, "--users", "10000"]) == 0
    elapsed = time.perf_counter() - start
    out = capsys.readouterr().out
    assert "0 mismatches of 10000 users across 2 sources" in out
    assert elapsed < 20, f"10,000 users took {elapsed:.1f}s"

    assert run([*args, "--users", "10000", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["users"] == 10000
    assert report["sources"] == ["sdk", "discovery"]
    assert report["mismatches"] == {"discovery": 0}
    print(f"consistency, 10,000 users: {elapsed:.2f}s; seconds per source {report['seconds']}")


def test_gateway_source_and_its_mismatches(
    control_plane: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    base, key = control_plane
    args = ["consistency", "--app", "shop", "--control-plane", base, "--sdk-key", key]
    with serve(gateway(base, key)) as gw:
        assert run([*args, "--users", "400", "--gateway", gw]) == 0
        assert "0 mismatches of 400 users across 3 sources" in capsys.readouterr().out
    liars = frozenset({"user-5", "user-17", "user-300"})
    with serve(gateway(base, key, liars)) as gw:
        assert run([*args, "--users", "400", "--gateway", gw, "--json"]) == 1
        report = json.loads(capsys.readouterr().out)
        assert report["sources"] == ["sdk", "discovery", "gateway"]
        assert report["mismatches"] == {"discovery": 0, "gateway": 3}
        assert {m["user"] for m in report["examples"]["gateway"]} == liars
        assert run([*args, "--users", "400", "--gateway", gw]) == 1
        out = capsys.readouterr().out
        assert "3 mismatches of 400 users across 3 sources" in out
        assert "user-17" in out


def test_errors_are_one_line(
    control_plane: tuple[str, str], capsys: pytest.CaptureFixture[str], sqlite_url: str
) -> None:
    base, key = control_plane
    cases = [
        (["--app", "blog", "--sdk-key", key], 1, "HTTP 403"),
        (["--app", "shop", "--sdk-key", "cmsdk_not-a-key-0123456789"], 1, "HTTP 401"),
        (["--app", "shop", "--sdk-key", key, "--users", "0"], 2, "--users"),
    ]
    for extra, code, text in cases:
        assert run(["consistency", "--control-plane", base, *extra]) == code, extra
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert err.startswith("coalmine: error: ")
        assert text in err
    code = run(
        ["consistency", "--app", "shop", "--sdk-key", key, "--control-plane", "http://127.0.0.1:9"]
    )
    assert code == 1
    assert "cannot reach the control plane" in capsys.readouterr().err


def test_compare() -> None:
    ref = {
        "a": Observation("canary", {"api": "v2", "worker": "v1"}),
        "b": Observation("stable", {"api": "v1", "worker": "v1"}),
        "c": Observation("stable", {"api": "v1", "worker": "v1"}),
        "d": Observation("stable", {"api": "v1", "worker": "v1"}),
    }
    assert compare(ref, "discovery", dict(ref)) == []
    observed = {
        "a": Observation("stable", {"api": "v2", "worker": "v1"}),  # channel
        "b": Observation("stable", {"api": "v2", "worker": "v1"}),  # a version
        "c": Observation("stable", {"api": "v1"}),  # a function missing
    }  # "d": no answer at all
    found = compare(ref, "discovery", observed)
    assert [m.user for m in found] == ["a", "b", "c", "d"]
    assert found[0] == Mismatch(
        "a", "discovery", "canary api=v2 worker=v1", "stable api=v2 worker=v1"
    )
    assert found[3].got == "error: no answer"

    # a partial observation (the gateway sees one function) is compared on what it saw
    partial = {
        "a": Observation("canary", {"worker": "v1"}, partial=True),
        "b": Observation("stable", {"api": "v1"}, partial=True),
        "c": Observation("stable", {"api": "v2"}, partial=True),
        "d": Observation(None, partial=True, error="HTTP 502 without x-coalmine-channel"),
    }
    found = compare(ref, "gateway", partial)
    assert [(m.user, m.expected, m.got) for m in found] == [
        ("c", "stable api=v1", "stable api=v2"),
        ("d", "stable", "error: HTTP 502 without x-coalmine-channel"),
    ]

    report = Report(4, ["sdk", "discovery", "gateway"], {"discovery": [], "gateway": found}, 7)
    assert report.mismatched_users == 2
    assert report.summary == "2 mismatches of 4 users across 3 sources"
    data = report.to_dict()
    assert data["mismatches"] == {"discovery": 0, "gateway": 2}
    assert data["examples"]["gateway"][0] == {
        "user": "c",
        "source": "gateway",
        "expected": "stable api=v1",
        "got": "stable api=v2",
    }
