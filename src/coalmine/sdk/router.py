"""What decides for `coalmine.sdk.dispatch`: a `Router`, and `StaticRouter`, one without a control plane.

A `Router` (the port, in `coalmine.core.ports`, re-exported here) is anything
with ``decide(app, user_key, context) -> Decision``: a `coalmine.sdk.Client`
is one. A router that also has ``encode(decision)``
(the Client does) signs the context that the handler's own publishes carry;
one with a ``keyring`` attribute lets dispatch verify contexts itself, which
draining after a rollback or a promotion needs.

`StaticRouter` decides from a `RoutingState` it is given (and that the
caller may replace at any time), with the same pure function as everything
else (`coalmine.core.evaluate`): for tests, examples, benchmarks, and
processes that receive their routing some other way. Like httpx's
``MockTransport``, the test double ships with the library.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from coalmine.core.context import DEFAULT_TTL_SECONDS, bound, encode_context
from coalmine.core.model import Channel, Decision, Reason
from coalmine.core.ports import Router
from coalmine.core.routing import RoutingState, evaluate
from coalmine.core.signing import Keyring

__all__ = ["Router", "StaticRouter"]


class StaticRouter:
    """A `Router` over a given `RoutingState`; assign ``router.state`` to change the routing.

    ``keyring`` signs and verifies contexts (without one, contexts are neither
    sent nor honoured, as with a `Client`). ``rng`` is request mode's roll.
    """

    def __init__(
        self,
        state: RoutingState,
        keyring: Keyring | None,
        *,
        ttl: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.state = state
        self.keyring = keyring
        self.ttl = ttl
        self.clock = clock
        self.rng = rng

    def decide(self, app: str, user_key: str | None, context: str | None = None) -> Decision:
        state = self.state
        if app != state.app:
            return Decision(
                app, None, Channel.STABLE, {}, Reason.ERROR, f"no routing for app {app!r}"
            )
        decision = evaluate(
            state, user_key, keyring=self.keyring, now=self.clock(), context=context, rng=self.rng
        )
        return bound(decision, self.keyring, user_key)

    def encode(self, decision: Decision, *, user: str | None = None) -> str | None:
        """The signed context of ``decision`` bound to ``user``, or None when there is nothing
        to pin."""
        if self.keyring is None or decision.release_id is None or decision.reason is Reason.ERROR:
            return None
        return encode_context(decision, self.keyring, now=self.clock(), ttl=self.ttl, user=user)
