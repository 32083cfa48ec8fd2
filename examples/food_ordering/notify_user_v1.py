"""notify-user v1 (consumes ``order_placed``): tells the user the order was placed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from examples.food_ordering.app import consumer, work


def notify(event: Mapping[str, Any]) -> dict[str, Any]:
    message = f"order {event['order_id']} placed"
    work(1.0)
    return {"version": "v1", "message": message}


handler = consumer(notify)
