"""The one routing function: which channel and versions a user gets.

`decide` is pure and synchronous so that the SDK, the async gateway and the
discovery endpoint call the very same code (DESIGN rule 1). It never raises:
bad input gives the stable versions with reason ``error``.

Order of precedence for a user of an app with a release:

1. rolled back (or rolling back, failed): baseline for everyone; promoted:
   candidate for everyone. Rollback wins over everything below.
2. a signed tester override that applies to this app, release and user;
3. in user route mode, a verified routing context from upstream (pinned
   chains, DESIGN rule 2), verified for this user (`evaluate` refuses a
   context decided for another user): for the current release its channel is kept; for
   a release this process knows was rolled back, canary maps to that
   release's baseline; for a newer release this process has not seen yet, the
   context's own versions are used; a context of any other, older release is
   stale (`RoutingState.stale`) and never honoured, however long ago that
   release ended: rollback always wins. A pinned decision keeps its context's
   expiry (`Decision.expires_at`), so signing it again never extends the chain;
4. the release's always-canary / never-canary lists;
5. the cohort: ``bucket(salt, user) < exposure`` in user mode, or a fresh
   weighted roll per request in request mode (which, like a Lambda weighted
   alias, ignores upstream contexts: each hop rolls on its own).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TypeVar

import mmh3

from coalmine.core.bucketing import BUCKETS, bucket
from coalmine.core.context import RoutingContext, decode_context
from coalmine.core.errors import InvalidInput
from coalmine.core.model import (
    ROLLED_BACK_PHASES,
    Channel,
    Decision,
    Phase,
    Reason,
    Release,
    RouteMode,
    VersionMap,
    freeze_versions,
    release_seq,
    validate_name,
)
from coalmine.core.override import Override, decode_override
from coalmine.core.signing import Keyring, Rejected, RejectKind

__all__ = ["OnRejected", "RoutingState", "decide", "evaluate"]

_EMPTY: VersionMap = MappingProxyType({})
Rng = Callable[[], float]


@dataclass(frozen=True)
class RoutingState:
    """Everything the data plane needs to route one app's users.

    ``versions`` are the app's current versions (what everyone runs when there
    is no release). ``release`` is the app's latest release, active or
    finished. ``rolled_back`` maps ids of earlier rolled-back releases to
    their baseline versions, so late contexts of those releases still map to
    versions that are safe.
    """

    app: str
    versions: VersionMap = field(default_factory=dict)
    release: Release | None = None
    rolled_back: Mapping[str, VersionMap] = field(default_factory=dict)
    _decisions: dict[tuple[Channel, Reason], Decision] = field(
        init=False, repr=False, compare=False
    )
    _fast: tuple[str, int, Decision, Decision, dict[str, Decision]] | None = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        validate_name(self.app, "app")
        object.__setattr__(self, "versions", freeze_versions(self.versions))
        object.__setattr__(
            self,
            "rolled_back",
            MappingProxyType({k: freeze_versions(v) for k, v in self.rolled_back.items()}),
        )
        rel = self.release
        if rel is not None and rel.app != self.app:
            raise InvalidInput(f"release {rel.id} belongs to app {rel.app!r}, not {self.app!r}")
        # Decisions are immutable and shared: building them once keeps the hot
        # path to a hash, a compare and a return.
        decisions: dict[tuple[Channel, Reason], Decision] = {}
        if rel is None:
            decisions[Channel.STABLE, Reason.NO_RELEASE] = Decision(
                self.app, None, Channel.STABLE, self.versions, Reason.NO_RELEASE
            )
        else:
            for channel in Channel:
                for reason in Reason:
                    decisions[channel, reason] = Decision(
                        self.app, rel.id, channel, rel.versions(channel), reason
                    )
            decisions[Channel.STABLE, Reason.PROMOTED] = Decision(
                self.app, rel.id, Channel.STABLE, rel.candidate, Reason.PROMOTED
            )
        object.__setattr__(self, "_decisions", decisions)
        fast = None
        if rel is not None and rel.route_mode is RouteMode.USER and rel.phase not in _SETTLED:
            targeted = {
                **dict.fromkeys(
                    rel.targeting.never_canary, decisions[Channel.STABLE, Reason.TARGETED]
                ),
                **dict.fromkeys(
                    rel.targeting.always_canary, decisions[Channel.CANARY, Reason.TARGETED]
                ),
            }
            fast = (
                rel.salt + ":",
                self.exposure,
                decisions[Channel.CANARY, Reason.COHORT],
                decisions[Channel.STABLE, Reason.COHORT],
                targeted,
            )
        object.__setattr__(self, "_fast", fast)

    @property
    def exposure(self) -> int:
        """The exposure in force: 0 while pending or settled, 10000 while promoting."""
        rel = self.release
        if rel is None or rel.phase in _SETTLED or rel.phase is Phase.PENDING:
            return 0
        if rel.phase is Phase.PROMOTING:
            return BUCKETS
        return rel.exposure

    def stale(self, context: RoutingContext) -> Rejected | None:
        """Why ``context`` names a release that has ended for good, or None.

        Honoured: the current release, a rolled-back release the snapshot
        names (its canary goes to that release's baseline), and a release
        newer than the current one (this process has not seen it yet). Any
        other release is older and over: its context is stale, even once the
        snapshot's rolled-back list has forgotten it.
        """
        rel = self.release
        rid = context.release_id
        if rel is None or context.app != self.app or rid == rel.id or rid in self.rolled_back:
            return None
        theirs, mine = release_seq(rid), release_seq(rel.id)
        if theirs is not None and mine is not None and theirs > mine:
            return None
        return Rejected(
            RejectKind.STALE,
            f"release {rid} is older than the app's current release {rel.id} and has ended:"
            " decided afresh",
        )

    @property
    def stable_versions(self) -> VersionMap:
        """What a user outside any canary runs right now."""
        rel = self.release
        if rel is None:
            return self.versions
        return rel.candidate if rel.phase is Phase.PROMOTED else rel.baseline


_SETTLED = ROLLED_BACK_PHASES | {Phase.PROMOTED}


def decide(
    state: RoutingState,
    user_key: str | None,
    context: RoutingContext | None = None,
    override: Override | None = None,
    *,
    rng: Rng = random.random,
) -> Decision:
    """The decision for one user (or, in request mode, one request). Never raises."""
    try:
        fast = state._fast
        if fast is not None and context is None and override is None and user_key:
            prefix, exposure, canary, stable, targeted = fast
            if targeted:
                hit = targeted.get(user_key)
                if hit is not None:
                    return hit
            data = prefix + user_key
            if data.isascii():
                b = mmh3.hash(data, 0, False) % BUCKETS
            else:
                b = bucket(prefix[:-1], user_key)
            return canary if b < exposure else stable
        return _decide(state, user_key, context, override, rng)
    except Exception as exc:  # the request path must not fail on bad data
        return _error(state, f"{type(exc).__name__}: {exc}")


def _decide(
    state: RoutingState,
    user_key: str | None,
    context: RoutingContext | None,
    override: Override | None,
    rng: Rng,
) -> Decision:
    rel = state.release
    d = state._decisions
    if rel is None:
        if context is not None and context.app == state.app:
            # This process has not seen the app's first release yet (DESIGN rule 2).
            return Decision(
                state.app,
                context.release_id,
                context.channel,
                context.versions,
                Reason.PINNED,
                binding=context.binding,
                expires_at=context.expires_at,
            )
        return d[Channel.STABLE, Reason.NO_RELEASE]
    if rel.phase in ROLLED_BACK_PHASES:
        return d[Channel.STABLE, Reason.ROLLED_BACK]
    if rel.phase is Phase.PROMOTED:
        return d[Channel.STABLE, Reason.PROMOTED]
    if override is not None and override.applies(state.app, rel.id, user_key):
        return d[override.channel, Reason.OVERRIDE]
    if (
        context is not None
        and rel.route_mode is RouteMode.USER
        and context.app == state.app
        and state.stale(context) is None
    ):
        return _pinned(state, rel, context)
    if not user_key or not isinstance(user_key, str):
        if rel.route_mode is RouteMode.REQUEST:
            return _roll(state, rng)
        return _error(state, "no user key: routed to stable")
    targeted = rel.targeting.channel_for(user_key)
    if targeted is not None:
        return d[targeted, Reason.TARGETED]
    if rel.route_mode is RouteMode.REQUEST:
        return _roll(state, rng)
    canary = bucket(rel.salt, user_key) < state.exposure
    return d[Channel.CANARY if canary else Channel.STABLE, Reason.COHORT]


def _roll(state: RoutingState, rng: Rng) -> Decision:
    canary = rng() * BUCKETS < state.exposure
    return state._decisions[Channel.CANARY if canary else Channel.STABLE, Reason.COHORT]


def _pinned(state: RoutingState, rel: Release, ctx: RoutingContext) -> Decision:
    """The decision a verified context pins; it keeps the context's user binding, so a hop
    that does not know its user passes the binding on, and its expiry, so no hop extends it."""
    bound, ends = ctx.binding, ctx.expires_at
    if ctx.release_id == rel.id:
        shared = state._decisions[ctx.channel, Reason.PINNED]
        return replace(shared, binding=bound, expires_at=ends)
    baseline = state.rolled_back.get(ctx.release_id)
    if baseline is not None:
        if ctx.channel is Channel.CANARY:
            return Decision(
                state.app,
                ctx.release_id,
                Channel.STABLE,
                baseline,
                Reason.ROLLED_BACK,
                binding=bound,
                expires_at=ends,
            )
        return Decision(
            state.app,
            ctx.release_id,
            Channel.STABLE,
            ctx.versions,
            Reason.PINNED,
            binding=bound,
            expires_at=ends,
        )
    # A newer release this process has not seen yet: the signed context is the truth.
    return Decision(
        state.app,
        ctx.release_id,
        ctx.channel,
        ctx.versions,
        Reason.PINNED,
        binding=bound,
        expires_at=ends,
    )


def _error(state: RoutingState, detail: str) -> Decision:
    try:
        versions = state.stable_versions
        release_id = state.release.id if state.release is not None else None
    except Exception:
        versions, release_id = _EMPTY, None
    return Decision(state.app, release_id, Channel.STABLE, versions, Reason.ERROR, detail)


_T = TypeVar("_T")


def _override_at(token: str, keyring: Keyring, now: float) -> Override | Rejected:
    return decode_override(token, keyring, now=now)


OnRejected = Callable[[str, Rejected], None]
"""told of each context or override ignored: what (``"routing context"``, ``"override"``) and why"""


def _verified(
    what: str,
    token: str | None,
    decoder: Callable[[str, Keyring, float], _T | Rejected],
    keyring: Keyring | None,
    now: float,
    notes: list[str],
    on_rejected: OnRejected | None,
) -> _T | None:
    """The verified value of ``token``, or None with a note saying why it was ignored."""
    if token is None:
        return None
    if keyring is None:
        notes.append(f"{what} ignored: no signing key configured")
        return None
    try:
        got = decoder(token, keyring, now)
    except Exception as exc:  # decoders never raise; stay safe on the request path
        notes.append(f"{what} ignored: {type(exc).__name__}: {exc}")
        return None
    if isinstance(got, Rejected):
        notes.append(f"{what} ignored ({got.kind}): {got.message}")
        if on_rejected is not None:
            on_rejected(what, got)
        return None
    return got


def evaluate(
    state: RoutingState,
    user_key: str | None,
    *,
    keyring: Keyring | None,
    now: float,
    context: str | None = None,
    override: str | None = None,
    rng: Rng = random.random,
    on_rejected: OnRejected | None = None,
) -> Decision:
    """Verify an encoded context and override token, then `decide`. Never raises.

    A context or override that fails verification is ignored (the user is
    decided afresh) and the decision's ``detail`` says why; ``on_rejected``
    (when given) is told too, to count rejections by kind. A context
    decided for another user than ``user_key``, or one that names no user,
    fails verification whenever ``user_key`` is given (`check_user`).
    """
    notes: list[str] = []
    ctx = ovr = None
    if context is not None:

        def for_user(token: str, ring: Keyring, at: float) -> RoutingContext | Rejected:
            return decode_context(token, ring, now=at, user=user_key)

        ctx = _verified("routing context", context, for_user, keyring, now, notes, on_rejected)
        stale = None if ctx is None else state.stale(ctx)
        if stale is not None:
            notes.append(f"routing context ignored ({stale.kind}): {stale.message}")
            if on_rejected is not None:
                on_rejected("routing context", stale)
            ctx = None
    if override is not None:
        ovr = _verified("override", override, _override_at, keyring, now, notes, on_rejected)
    decision = decide(state, user_key, ctx, ovr, rng=rng)
    if not notes:
        return decision
    detail = "; ".join(([decision.detail] if decision.detail else []) + notes)
    return replace(decision, detail=detail)
