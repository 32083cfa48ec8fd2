"""`coalmine consistency` against a real control plane (and a stand-in gateway)."""

from __future__ import annotations

import json
import time
import unicodedata
from collections.abc import Iterator
from typing import Annotated

import httpx
import jwt as pyjwt
import pytest
from fastapi import FastAPI, Header, Response
from hypothesis import given, settings
from hypothesis import strategies as st

from coalmine.cli.app import run
from coalmine.cli.consistency import ID_KINDS, Mismatch, Observation, Report, compare, user_keys
from coalmine.core.model import Channel, TargetKind
from coalmine.core.routing import evaluate
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.core.userkey import decode_header, encode_header
from coalmine.gateway import (
    Call,
    Gateway,
    GatewayConfig,
    IdentityConfig,
    MockTarget,
    Reply,
    StaticSource,
)
from coalmine.sdk import Client
from coalmine.web import create_app
from tests.web.conftest import ADMIN_SECRET, bearer, serve
from tests.web.test_discovery import HTTP_DOC, KEYS

USERS = user_keys(400)


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
                "targeting": {"always_canary": [USERS[3]], "never_canary": [USERS[4]]},
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
    gw.state.calls = 0

    @gw.get("/{function}/")
    def call(function: str, x_user_id: Annotated[str, Header()]) -> Response:
        gw.state.calls += 1
        user = decode_header(x_user_id)
        d = evaluate(state, user, keyring=None, now=time.time())
        channel = str(d.channel)
        if user in lie_for:
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
    assert report["gateway_calls"] == 0
    print(f"consistency, 10,000 users: {elapsed:.2f}s; seconds per source {report['seconds']}")


def test_gateway_source_and_its_mismatches(
    control_plane: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    base, key = control_plane
    args = ["consistency", "--app", "shop", "--control-plane", base, "--sdk-key", key]
    honest = gateway(base, key)
    with serve(honest) as gw:
        assert run([*args, "--users", "400", "--gateway", gw]) == 0
        out = capsys.readouterr().out
        assert "0 mismatches of 400 users across 3 sources" in out
        # the check is not side-effect free, and says so: every user called a function
        assert honest.state.calls == 400
        assert "called the app's functions 400 times" in " ".join(out.split())
    liars = frozenset({USERS[5], USERS[17], USERS[300]})
    with serve(gateway(base, key, liars)) as gw:
        assert run([*args, "--users", "400", "--gateway", gw, "--json"]) == 1
        report = json.loads(capsys.readouterr().out)
        assert report["sources"] == ["sdk", "discovery", "gateway"]
        assert report["mismatches"] == {"discovery": 0, "gateway": 3}
        assert report["gateway_calls"] >= 400  # once per attempt
        assert {m["user"] for m in report["examples"]["gateway"]} == liars
        assert run([*args, "--users", "400", "--gateway", gw]) == 1
        out = capsys.readouterr().out
        assert "3 mismatches of 400 users across 3 sources" in out
        assert USERS[17] in out


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


def test_user_keys_are_distinct_and_of_every_kind() -> None:
    keys = user_keys(len(ID_KINDS) * 3)
    assert len(set(keys)) == len(keys)
    assert keys[: len(ID_KINDS)] == [kind.format(i=i) for i, kind in enumerate(ID_KINDS)]
    assert any(not k.isascii() for k in keys)
    assert unicodedata.normalize("NFC", keys[2]) != keys[2]  # a decomposed id is kept so


JWT_SECRET = "consistency-jwt-secret-of-32-bytes"


def test_one_user_one_bucket_on_every_wire(control_plane: tuple[str, str]) -> None:
    """Any Unicode id: the SDK, discovery (query and JSON), OFREP and the gateway (header,
    raw UTF-8 header, cookie, JWT claim) all decide for exactly that id."""
    base, key = control_plane
    snapshot = RoutingSnapshot.from_dict(
        httpx.get(f"{base}/v1/apps/shop/routing", headers=bearer(key)).json()
    )
    calls: list[Call] = []

    def ok(call: Call, body: bytes) -> Reply:
        calls.append(call)
        return Reply(200, [], b"ok")

    identity = IdentityConfig(user_header="x-user-id", user_cookie="uid", jwt_secret=JWT_SECRET)
    gateway = Gateway(
        GatewayConfig(app="shop", identity=identity),
        StaticSource(snapshot),
        targets={TargetKind.HTTP: MockTarget(ok)},
    )
    with (
        Client(base, key, apps=["shop"], wait=10) as sdk,
        serve(gateway) as gw_url,  # type: ignore[arg-type]
        httpx.Client(base_url=gw_url, timeout=10) as gw,
        httpx.Client(base_url=base, headers=bearer(key), timeout=10) as api,
    ):

        @settings(max_examples=60, deadline=None)
        @given(st.text(min_size=1, max_size=60))
        def check(user: str) -> None:
            ref = sdk.decide("shop", user)
            expected = (str(ref.channel), dict(ref.versions))
            one = api.get("/v1/discovery", params={"app": "shop", "user": user}).json()
            assert (one["channel"], one["versions"]) == expected, ("discovery query", user)
            batch = api.post("/v1/discovery/batch", json={"app": "shop", "users": [user]})
            answer = batch.json()["answers"][0]
            assert (answer["channel"], answer["versions"]) == expected, ("discovery JSON", user)
            flag = api.post(
                "/ofrep/v1/evaluate/flags/shop.api", json={"context": {"targetingKey": user}}
            ).json()
            assert (flag["metadata"]["channel"], flag["variant"]) == (
                expected[0],
                expected[1]["api"],
            ), ("OFREP", user)
            token = pyjwt.encode({"sub": user, "exp": time.time() + 600}, JWT_SECRET)
            wires: dict[str, dict[str, str | bytes]] = {
                "header": {"x-user-id": encode_header(user)},
                "cookie": {"cookie": f"uid={encode_header(user)}"},
                "JWT claim": {"authorization": f"Bearer {token}"},
            }
            if "%" not in user and user.isprintable() and user == user.strip():
                wires["raw UTF-8 header"] = {"x-user-id": user.encode("utf-8")}
            for wire, headers in wires.items():
                calls.clear()
                r = gw.get("/api/", headers=headers)
                assert r.status_code == 200, (wire, user, r.text)
                got = (r.headers["x-coalmine-channel"], r.headers["x-coalmine-version"])
                assert got == (expected[0], expected[1]["api"]), (wire, user)
                forwarded = dict(calls[0].headers)[b"x-coalmine-user"].decode("latin-1")
                assert decode_header(forwarded) == user, (wire, user)

        check()


def test_the_help_says_the_gateway_check_calls_the_functions(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(["consistency", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "CALL the functions (their side effects and metrics happen)" in text
