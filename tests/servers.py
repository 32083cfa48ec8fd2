"""Serve an ASGI app with uvicorn in a thread on a socket the test bound (loopback only)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn


def start_uvicorn(
    app: Any,
    sock: socket.socket,
    *,
    grace: float = 0,
    start_timeout: float = 15,
    http: str = "auto",
) -> tuple[uvicorn.Server, threading.Thread]:
    """Run ``app`` on ``sock`` in a daemon thread; return once uvicorn has started.

    ``http`` is uvicorn's protocol setting (the gateway's: `coalmine.gateway.server.PROTOCOL`).
    """
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        ws="none",
        timeout_graceful_shutdown=grace,
        http=http,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:  # uvicorn exposes a flag, not an event
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.005)
    return server, thread
