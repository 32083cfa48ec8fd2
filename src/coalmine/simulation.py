"""The blast-radius simulator: the article's two claims, measured with the real core.

Users send requests through a chain of functions while a release is at a fixed
exposure. In ``user`` route mode the first hop calls `decide` and every later
hop decides again with the signed routing context it propagated
(`encode_context`, `decode_context`), exactly as the SDK and gateway do; in ``request`` mode each hop
rolls on its own, as a Lambda weighted alias does. For each mode it counts
the users who met the canary, the requests that reached it, and the requests
whose chain mixed stable and canary versions.

Pure and seeded: the same parameters give the same numbers.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

from coalmine.core.context import RoutingContext, decode_context, encode_context
from coalmine.core.errors import InvalidInput
from coalmine.core.model import Channel, Decision, Phase, Release, RouteMode
from coalmine.core.routing import RoutingState, decide
from coalmine.core.signing import Keyring, Rejected
from coalmine.core.strategy import parse_strategy

__all__ = ["ModeResult", "SimulationParams", "SimulationResult", "simulate"]

APP = "simulated-app"
_KEYRING = Keyring.single(b"coalmine-simulator-signing-key!!", "sim")
_NOW = 1_700_000_000.0


@dataclass(frozen=True, slots=True)
class SimulationParams:
    users: int = 10_000
    requests: int = 200_000
    percent: float = 10.0
    chain: int = 3
    seed: int = 1
    skew: float = 0.0
    """Zipf exponent of requests per user; 0 spreads requests uniformly."""
    trials: int = 1

    def validate(self) -> SimulationParams:
        if self.users < 1:
            raise InvalidInput("--users must be at least 1")
        if self.requests < 1:
            raise InvalidInput("--requests must be at least 1")
        if not 0 <= self.percent <= 100:
            raise InvalidInput("--percent must be between 0 and 100")
        if abs(round(self.percent * 100) - self.percent * 100) > 1e-6:
            raise InvalidInput("--percent takes at most two decimals (0.01% steps)")
        if not 1 <= self.chain <= 50:
            raise InvalidInput("--chain must be between 1 and 50 functions")
        if self.skew < 0:
            raise InvalidInput("--skew must be 0 (uniform) or a positive Zipf exponent")
        if not 1 <= self.trials <= 100_000:
            raise InvalidInput("--trials must be between 1 and 100000")
        if self.requests * self.chain * self.trials > 50_000_000:
            raise InvalidInput(
                "requests x chain x trials is over 50 million hops; lower one of them"
            )
        return self

    @property
    def exposure(self) -> int:
        return round(self.percent * 100)


@dataclass(slots=True)
class ModeResult:
    active_users: int = 0
    exposed_users: int = 0
    requests: int = 0
    canary_requests: int = 0
    mixed_chains: int = 0
    max_exposed_user_fraction: float = 0.0
    """the worst single trial"""

    @property
    def exposed_user_fraction(self) -> float:
        return self.exposed_users / self.active_users if self.active_users else 0.0

    @property
    def canary_request_fraction(self) -> float:
        return self.canary_requests / self.requests if self.requests else 0.0

    @property
    def mixed_chain_fraction(self) -> float:
        return self.mixed_chains / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {
            "exposed_user_fraction": self.exposed_user_fraction,
            "canary_request_fraction": self.canary_request_fraction,
            "mixed_chain_fraction": self.mixed_chain_fraction,
            "active_users": self.active_users,
            "exposed_users": self.exposed_users,
            "requests": self.requests,
            "canary_requests": self.canary_requests,
            "mixed_chains": self.mixed_chains,
            "max_exposed_user_fraction": self.max_exposed_user_fraction,
        }


@dataclass(frozen=True, slots=True)
class SimulationResult:
    params: SimulationParams
    user: ModeResult
    request: ModeResult

    def to_dict(self) -> dict[str, object]:
        return {
            "user": self.user.to_dict(),
            "request": self.request.to_dict(),
            "params": asdict(self.params),
        }


def _states(params: SimulationParams, salt: str) -> dict[RouteMode, RoutingState]:
    functions = [f"fn-{i + 1}" for i in range(params.chain)]
    current = dict.fromkeys(functions, "v1")
    release = Release.start(
        id="sim-1",
        app=APP,
        current=current,
        changes=dict.fromkeys(functions, "v2"),
        salt=salt,
        strategy=parse_strategy("AllAtOnce"),
    )
    running = replace(release, phase=Phase.RUNNING, exposure=params.exposure)
    return {
        mode: RoutingState(APP, current, replace(running, route_mode=mode)) for mode in RouteMode
    }


def _request_users(params: SimulationParams, rng: random.Random) -> Sequence[int]:
    if params.skew == 0:
        return [rng.randrange(params.users) for _ in range(params.requests)]
    weights = [1.0 / (rank**params.skew) for rank in range(1, params.users + 1)]
    cumulative = list(itertools.accumulate(weights))
    return rng.choices(range(params.users), cum_weights=cumulative, k=params.requests)


def _propagate(decision: Decision, cache: dict[int, RoutingContext]) -> RoutingContext:
    """Encode a decision as the first hop would and verify it as the next hop would.

    Both are pure for a fixed clock, and one routing state hands out shared
    decision objects, so the codec runs once per distinct decision of a trial
    instead of once per hop.
    """
    got = cache.get(id(decision))
    if got is None:
        token = encode_context(decision, _KEYRING, now=_NOW)
        verified = decode_context(token, _KEYRING, now=_NOW)
        if isinstance(verified, Rejected):  # would be a codec bug
            raise AssertionError(f"the simulator's own context was rejected: {verified.message}")
        got = cache[id(decision)] = verified
    return got


def _chain_user_mode(
    state: RoutingState, user: str, hops: int, cache: dict[int, RoutingContext]
) -> list[Channel]:
    first = decide(state, user)
    context = _propagate(first, cache)
    return [first.channel] + [decide(state, user, context).channel for _ in range(hops - 1)]


def _chain_request_mode(
    state: RoutingState, user: str, hops: int, rng: random.Random
) -> list[Channel]:
    return [decide(state, user, rng=rng.random).channel for _ in range(hops)]


def _run_trial(params: SimulationParams, trial: int, out: dict[RouteMode, ModeResult]) -> None:
    rng = random.Random(params.seed * 1_000_003 + trial)
    salt = f"{rng.getrandbits(64):016x}"
    states = _states(params, salt)
    senders = _request_users(params, rng)
    active = len(set(senders))
    for mode, state in states.items():
        result = out[mode]
        exposed: set[int] = set()
        contexts: dict[int, RoutingContext] = {}
        for u in senders:
            user = f"user-{u}"
            if mode is RouteMode.USER:
                channels = _chain_user_mode(state, user, params.chain, contexts)
            else:
                channels = _chain_request_mode(state, user, params.chain, rng)
            canary = Channel.CANARY in channels
            if canary:
                result.canary_requests += 1
                exposed.add(u)
                if Channel.STABLE in channels:
                    result.mixed_chains += 1
        result.requests += len(senders)
        result.active_users += active
        result.exposed_users += len(exposed)
        result.max_exposed_user_fraction = max(
            result.max_exposed_user_fraction, len(exposed) / active
        )


def simulate(params: SimulationParams) -> SimulationResult:
    """Run ``params.trials`` seeded trials of both route modes and pool the counts."""
    params.validate()
    out = {mode: ModeResult() for mode in RouteMode}
    for trial in range(params.trials):
        _run_trial(params, trial, out)
    return SimulationResult(params, out[RouteMode.USER], out[RouteMode.REQUEST])
