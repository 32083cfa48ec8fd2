"""A three-function chain for the data-plane tests: a -> b -> c over HTTP through the gateway.

Each version reports itself and the versions below it, so a test sees the
whole chain of one request. The calls go through the gateway again (the URL
is in CHAIN_GATEWAY_URL) with plain httpx: the SDK's instrumentation adds the
signed routing context, so the chain keeps the first hop's decision.
"""

from __future__ import annotations

import os
from typing import Any

from tests.e2e import chain_http


def _call(function: str, event: dict[str, Any]) -> list[list[str]]:
    user = (event.get("headers") or {}).get("x-coalmine-user", "")
    r = chain_http.client.get(
        f"{os.environ['CHAIN_GATEWAY_URL']}/{function}/", headers={"x-user-id": user}
    )
    r.raise_for_status()
    chain: list[list[str]] = r.json()["chain"]
    return chain


def _reply(me: str, version: str, below: list[list[str]]) -> dict[str, Any]:
    return {"chain": [[me, version], *below]}


def a_v1(event: dict[str, Any], context: object = None) -> dict[str, Any]:
    return _reply("a", "v1", _call("b", event))


def a_v2(event: dict[str, Any], context: object = None) -> dict[str, Any]:
    return _reply("a", "v2", _call("b", event))


def b_v1(event: dict[str, Any], context: object = None) -> dict[str, Any]:
    return _reply("b", "v1", _call("c", event))


def b_v2(event: dict[str, Any], context: object = None) -> dict[str, Any]:
    return _reply("b", "v2", _call("c", event))


def c_v1(event: dict[str, Any], context: object = None) -> dict[str, Any]:
    return _reply("c", "v1", [])


def c_v2(event: dict[str, Any], context: object = None) -> dict[str, Any]:
    return _reply("c", "v2", [])
