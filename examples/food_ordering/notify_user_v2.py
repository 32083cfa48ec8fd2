"""notify-user v2: also tells the delivery estimate, which only place-order v2 sends."""

from __future__ import annotations

from typing import Any


def handler(event: dict[str, Any], context: object = None) -> dict[str, Any]:
    eta = event["delivery_eta"]  # KeyError on a v1 event: the article's failure
    return {"version": "v2", "message": f"order {event['order_id']} arrives in {eta} min"}
