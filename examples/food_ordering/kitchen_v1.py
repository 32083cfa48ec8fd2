"""kitchen v1 (HTTP, called by place-order through the gateway): accepts an order and says
how long it takes to prepare."""

from __future__ import annotations

import json
from typing import Any

from examples.food_ordering.app import reply, work


def handler(event: dict[str, Any], context: object = None) -> dict[str, Any]:
    try:
        order = json.loads(event.get("body") or "{}")
    except ValueError:
        return reply(400, {"error": "the body must be a JSON order"})
    items = order.get("items") if isinstance(order, dict) else None
    work(5.0)
    return reply(200, {"order_id": order.get("id"), "prep_minutes": 10 + 2 * len(items or [])})
