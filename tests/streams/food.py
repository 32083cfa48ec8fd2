"""The article's food-ordering app on a stream: routing state, a router, a producer.

`place-order` (the API entry point) decides for the user, builds its
version's ``order_placed`` event and publishes it; `notify-user`
consumes it. v2 of place-order adds ``delivery_eta`` and v2 of notify-user
needs it (examples/food_ordering).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from examples.food_ordering import (
    notify_user_v1,
    notify_user_v2,
    place_order_v1,
    place_order_v2,
)

from coalmine.core import Keyring, Phase, Release, RouteMode, RoutingState, parse_strategy
from coalmine.core.ports import Stream
from coalmine.sdk import use
from coalmine.sdk.publish import publish
from coalmine.sdk.router import StaticRouter

APP = "food-ordering"
TOPIC_PREFIX = "order_placed"
PRODUCER, CONSUMER = "place-order", "notify-user"
CURRENT = {PRODUCER: "v1", CONSUMER: "v1"}
CHANGES = {PRODUCER: "v2", CONSUMER: "v2"}
SALT = "food-salt-1"
SECRET = b"streams-test-secret-0123456789ab"
KEYRING = Keyring.single(SECRET)
KEYRING_SPEC = "k1:" + SECRET.decode()

PLACE_ORDER: Mapping[str, Callable[..., dict[str, Any]]] = {
    "v1": place_order_v1.order_placed,
    "v2": place_order_v2.order_placed,
}
NOTIFY_USER: Mapping[str, Callable[..., dict[str, Any]]] = {
    "v1": notify_user_v1.handler,
    "v2": notify_user_v2.handler,
}


def release(
    exposure: int, *, mode: RouteMode = RouteMode.USER, phase: Phase = Phase.RUNNING
) -> Release:
    base = Release.start(
        id="r1",
        app=APP,
        current=CURRENT,
        changes=CHANGES,
        salt=SALT,
        strategy=parse_strategy("Linear10PercentEvery1Minute"),
        route_mode=mode,
    )
    return dataclasses.replace(base, phase=phase, exposure=exposure)


def state(
    exposure: int, *, mode: RouteMode = RouteMode.USER, phase: Phase = Phase.RUNNING
) -> RoutingState:
    return RoutingState(APP, CURRENT, release(exposure, mode=mode, phase=phase))


def router(
    exposure: int, *, mode: RouteMode = RouteMode.USER, seed: int | None = None
) -> StaticRouter:
    import random

    rng = random.Random(seed).random if seed is not None else random.random
    return StaticRouter(state(exposure, mode=mode), KEYRING, rng=rng)


def place_order(stream: Stream, topic: str, r: StaticRouter, user: str, order_id: str) -> str:
    """The API entry point: decide, run place-order's version, publish its event.

    Returns the version of place-order that ran.
    """
    decision = r.decide(APP, user, None)
    version = decision.versions[PRODUCER]
    event = PLACE_ORDER[version]({"id": order_id}, user)
    with use(decision, r.encode(decision)):
        publish(stream, topic, event, key=user)
    return version


def users_in(lo: int, hi: int, count: int = 1) -> list[str]:
    """``count`` user keys whose bucket is in [lo, hi) for this app's release."""
    from coalmine.core import bucket

    out: list[str] = []
    i = 0
    while len(out) < count:
        user = f"user-{i}"
        if lo <= bucket(SALT, user) < hi:
            out.append(user)
        i += 1
    return out
