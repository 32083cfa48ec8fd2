"""notify-user v2: also tells the delivery estimate, which only place-order v2 (and later) sends."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from examples.food_ordering.app import consumer, work


def notify(event: Mapping[str, Any]) -> dict[str, Any]:
    eta = event["delivery_eta"]  # KeyError on a v1 event: the article's failure
    message = f"order {event['order_id']} arrives in {eta} min"
    work(1.0)
    return {"version": "v2", "message": message}


handler = consumer(notify)
