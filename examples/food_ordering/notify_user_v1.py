"""notify-user v1: tells the user the order was placed."""

from __future__ import annotations

from typing import Any


def handler(event: dict[str, Any], context: object = None) -> dict[str, Any]:
    return {"version": "v1", "message": f"order {event['order_id']} placed"}
