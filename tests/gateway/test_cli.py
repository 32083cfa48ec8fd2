"""`coalmine gateway`: one-line usage errors, and a real run with two workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from coalmine.cli.app import run
from coalmine.controller.schemas import VersionCreate
from coalmine.web import create_app
from tests.gateway.fixtures.harness import ThreadServer
from tests.helpers import free_port
from tests.services import child_env

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = ["--app", "shop", "--control-plane", "http://127.0.0.1:1", "--sdk-key", "k"]


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["gateway"], {}, "Missing option '--app'"),
        (["gateway", "--app", "shop"], {}, "Missing option '--control-plane'"),
        (["gateway", *REQUIRED[:2], "--control-plane", "x", "--sdk-key", "k"], {}, "URL"),
        (["gateway", "--app", "Shop", *REQUIRED[2:]], {}, "invalid app name 'Shop'"),
        (["gateway", *REQUIRED, "--jwt-claim", "uid"], {}, "needs --jwt-secret"),
        (["gateway", *REQUIRED, "--jwt-secret", "short"], {}, "at least 32 bytes"),
        (["gateway", *REQUIRED, "--jwt-public-key", "/nonexistent.pem"], {}, "cannot read"),
        (["gateway", *REQUIRED, "--jwt-jwks-url", "file:///x"], {}, "JWKS URL must be http"),
        (["gateway", *REQUIRED, "--workers", "0"], {}, "--workers"),
        (["gateway", *REQUIRED, "--user-header", "a b"], {}, "invalid user header name"),
        (["gateway", *REQUIRED, "--log-level", "loud"], {}, "use debug, info"),
        (["gateway", *REQUIRED], {"COALMINE_SIGNING_KEYS": "nocolon"}, "COALMINE_SIGNING_KEYS"),
        (
            ["gateway", *REQUIRED],
            {"COALMINE_METRICS_DEPRECATED_NAMES": "maybe"},
            "invalid COALMINE_METRICS_DEPRECATED_NAMES 'maybe': use 1",
        ),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    argv: list[str],
    env: dict[str, str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("COALMINE_APP", "COALMINE_CONTROL_PLANE", "COALMINE_SDK_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("coalmine: error: ")
    assert len(err.strip().splitlines()) == 1
    assert message in err


@pytest.fixture
def control_plane(sqlite_url: str) -> Iterator[tuple[str, str]]:
    control = create_app(database_url=sqlite_url)
    service = control.state.plane
    service.catalog.create_app("shop", "test")
    service.catalog.add_function("shop", "orders", "test")
    target = "tests.gateway.fixtures.orders_v1:handler"
    service.catalog.register_version(
        "shop", "orders", VersionCreate(name="v1", target=target), "test"
    )
    service.catalog.set_current("shop", "orders", "v1", "test")
    key = control.state.tokens.create("gateway", "sdk", "shop").token
    with ThreadServer(control) as server:
        yield server.url, key


@pytest.mark.slow
def test_the_command_serves_with_two_workers(control_plane: tuple[str, str]) -> None:
    base, key = control_plane
    port = free_port()
    env = child_env(
        COALMINE_SDK_KEY=key, COALMINE_SIGNING_KEYS="gw1:gateway-test-secret-0123456789"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coalmine.cli",
            "gateway",
            "--app",
            "shop",
            "--control-plane",
            base,
            "--port",
            str(port),
            "--workers",
            "2",
            "--user-header",
            "x-user-id",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:  # the workers start in their own time: poll until one answers
            assert proc.poll() is None, proc.communicate()[0]
            try:
                if httpx.get(f"{url}/healthz", timeout=1).json()["revision"] is not None:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.05)
        for i in range(10):
            r = httpx.get(f"{url}/orders", headers={"x-user-id": f"u{i}"}, timeout=5)
            assert r.status_code == 200, r.text
            assert (r.headers["x-coalmine-version"], r.json()["file"]) == ("v1", "orders_v1")
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=20)[0]
    assert proc.returncode == 0, out
    assert f"coalmine gateway for app shop on http://127.0.0.1:{port}" in out
    assert "coalmine: users are identified by header x-user-id (trusted: only a proxy" in out


def test_no_gateway_config_in_the_environment_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from coalmine.cli.gateway import CONFIG_ENV, worker_app

    monkeypatch.delenv(CONFIG_ENV, raising=False)
    with pytest.raises(RuntimeError, match="start the gateway with `coalmine gateway`"):
        worker_app()
    assert os.environ.get(CONFIG_ENV) is None
