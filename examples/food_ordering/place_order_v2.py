"""place-order v2: as v1, and the event carries `delivery_eta` (minutes)."""

from __future__ import annotations

from typing import Any


def handler(event: dict[str, Any], context: object = None) -> dict[str, Any]:
    order = event.get("order") or {}
    return {
        "version": "v2",
        "event": {
            "type": "order_placed",
            "order_id": order.get("id", "o-1"),
            "user": event.get("user"),
            "delivery_eta": 25,
        },
    }
