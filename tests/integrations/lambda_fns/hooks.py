"""Lifecycle hook functions as a team writes them for coalmine: the event is the hook's
payload (``hook``, ``app``, ``release``, ``attempt``), the answer the verdict."""

from __future__ import annotations

import time
from typing import Any


def passes(event: dict[str, Any], context: Any) -> dict[str, Any]:
    candidate = event["release"]["candidate"]
    return {"status": "Succeeded", "checked": sorted(candidate)}


def fails(event: dict[str, Any], context: Any) -> dict[str, Any]:
    cart = event["release"]["candidate"]["cart"]
    return {"status": "Failed", "reason": f"smoke test of cart {cart}: 3 of 20 orders failed"}


def codedeploy_failed(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """CodeDeploy's spelling, no reason."""
    return {"status": "FAILED"}


def raises(event: dict[str, Any], context: Any) -> None:
    raise RuntimeError(f"cannot reach the orders table ({event['hook']})")


def slow(event: dict[str, Any], context: Any) -> dict[str, Any]:
    time.sleep(1.0)
    return {"status": "Succeeded"}
