"""place-order v2: as v1, and ``order_placed`` carries ``delivery_eta`` (minutes), which
notify-user v2 needs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from examples.food_ordering.app import BadOrder, Order, reply, work

VERSION = "v2"
DELIVERY_MINUTES = 20


def order_placed(order: Mapping[str, Any], user: str, prep_minutes: int = 15) -> dict[str, Any]:
    """The ``order_placed`` event of v2: v1's and the delivery estimate."""
    return {
        "type": "order_placed",
        "order_id": order["id"],
        "user": user,
        "delivery_eta": prep_minutes + DELIVERY_MINUTES,
    }


def handler(event: dict[str, Any], context: object = None) -> dict[str, Any]:
    try:
        order = Order.of(event)
    except BadOrder as exc:
        return reply(400, {"error": str(exc)})
    work(60.0, 0.25)
    ticket = order.kitchen()
    placed = order_placed(order.order, order.user, ticket["prep_minutes"])
    order.publish(placed)
    return reply(201, {"version": VERSION, "event": placed})
