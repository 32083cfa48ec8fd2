"""place-order v1: accepts an order and emits `order_placed` (no delivery estimate)."""

from __future__ import annotations

from typing import Any


def handler(event: dict[str, Any], context: object = None) -> dict[str, Any]:
    order = event.get("order") or {}
    return {
        "version": "v1",
        "event": {
            "type": "order_placed",
            "order_id": order.get("id", "o-1"),
            "user": event.get("user"),
        },
    }
