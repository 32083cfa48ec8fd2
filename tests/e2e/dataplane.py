"""The data plane for end-to-end tests: the real control plane and a real gateway on loopback."""

from __future__ import annotations

import socket
import threading
from typing import Any

import uvicorn

from coalmine.core.signing import Keyring
from coalmine.gateway import GatewayConfig, IdentityConfig, create_gateway
from coalmine.gateway.app import Gateway
from coalmine.gateway.server import PROTOCOL
from coalmine.gateway.source import SyncSource
from tests.helpers import free_port
from tests.sdk import ControlPlane
from tests.servers import start_uvicorn

APP = "chain"
KEYRING = Keyring.single("e2e-data-plane-signing-secret-0123", "e1")
SPEC: dict[str, Any] = {
    "app": APP,
    "functions": {
        fn: {
            "current": "v1",
            "versions": {v: f"tests.e2e.chain_fns:{fn}_{v}" for v in ("v1", "v2")},
        }
        for fn in ("a", "b", "c")
    },
    "release": {"strategy": "20%:1h, 60%:1h, 100%"},
}


class GatewayServer:
    """`coalmine.gateway` on a free 127.0.0.1 port, following the control plane.

    ``metrics_interval``: flush the per-version metrics this often (seconds), for tests
    whose judge reads them; ``timeout``: the gateway's per-call timeout.
    """

    def __init__(
        self,
        plane: ControlPlane,
        sdk_key: str,
        *,
        app: str = APP,
        metrics_interval: float | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = GatewayConfig(
            app=app,
            control_plane_url=plane.url,
            sdk_key=sdk_key,
            keyring=KEYRING,
            identity=IdentityConfig(user_header="x-user-id"),
            timeout=timeout,
        )
        self.app = (
            create_gateway(config)
            if metrics_interval is None
            else Gateway(
                config, SyncSource(plane.url, sdk_key, app), metrics_interval=metrics_interval
            )
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> GatewayServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        server, thread = start_uvicorn(self.app, sock, start_timeout=20, http=PROTOCOL)
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=15)
