"""The routing context: a decision serialised into a signed W3C baggage entry.

The context is what makes a chain run one version set: the first hop decides,
signs the decision into the ``coalmine`` baggage member, and every hop after it
(HTTP, message headers, a Kinesis envelope) reads it back instead of deciding
again. Signing (see `coalmine.core.signing`) means a client cannot forge itself
into a channel; expiry bounds how long a chain can stay pinned.

Claims: ``a`` app, ``r`` release id, ``c`` channel (``"c"`` canary, ``"s"``
stable), ``v`` function -> version map, ``e`` expiry (Unix seconds).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from coalmine.core.errors import InvalidInput
from coalmine.core.model import Channel, Decision, VersionMap, freeze_versions, validate_name
from coalmine.core.signing import Keyring, Rejected, RejectKind, seal, unseal

__all__ = [
    "BAGGAGE_KEY",
    "CHANNEL_CODES",
    "CODE_CHANNELS",
    "DEFAULT_TTL_SECONDS",
    "MAX_BAGGAGE_BYTES",
    "MAX_CONTEXT_BYTES",
    "PURPOSE",
    "ContextTooLarge",
    "RoutingContext",
    "decode_context",
    "encode_context",
    "find_in_baggage",
    "set_in_baggage",
]

BAGGAGE_KEY = "coalmine"
PURPOSE = "coalmine-context"
MAX_CONTEXT_BYTES = 2048
"""Upper bound of one encoded context; W3C baggage allows 8192 bytes in all."""
MAX_BAGGAGE_BYTES = 8192
MAX_BAGGAGE_MEMBERS = 180
DEFAULT_TTL_SECONDS = 3600
CHANNEL_CODES = {Channel.CANARY: "c", Channel.STABLE: "s"}
CODE_CHANNELS = {v: k for k, v in CHANNEL_CODES.items()}


class ContextTooLarge(InvalidInput):
    """The decision does not fit a context (too many or too long names)."""


@dataclass(frozen=True, slots=True)
class RoutingContext:
    """A verified routing context: the upstream decision a hop must honour."""

    app: str
    release_id: str
    channel: Channel
    versions: VersionMap
    expires_at: int


def encode_context(
    decision: Decision, keyring: Keyring, *, now: float, ttl: float = DEFAULT_TTL_SECONDS
) -> str | None:
    """Sign a decision into a baggage value; ``None`` when there is nothing to pin.

    A decision without a release (no release, or an error) is not propagated:
    each hop then decides for itself, which gives the same stable versions.
    """
    if decision.release_id is None:
        return None
    claims = {
        "a": decision.app,
        "r": decision.release_id,
        "c": CHANNEL_CODES[decision.channel],
        "v": dict(decision.versions),
        "e": int(now + ttl),
    }
    token = seal(PURPOSE, keyring, claims)
    if len(token) > MAX_CONTEXT_BYTES:
        raise ContextTooLarge(
            f"routing context for app {decision.app!r} is {len(token)} bytes,"
            f" over the {MAX_CONTEXT_BYTES}-byte limit: shorten function or version names"
        )
    return token


def decode_context(value: object, keyring: Keyring, *, now: float) -> RoutingContext | Rejected:
    """Verify a baggage value; never raises."""
    claims = unseal(PURPOSE, keyring, value, now=now, max_bytes=MAX_CONTEXT_BYTES)
    if isinstance(claims, Rejected):
        return claims
    try:
        app = validate_name(claims["a"], "app")
        release_id = claims["r"]
        if not isinstance(release_id, str) or not release_id:
            raise ValueError("bad release id")
        channel = CODE_CHANNELS[claims["c"]]
        versions = claims["v"]
        if not isinstance(versions, Mapping):
            raise ValueError("bad versions")
        frozen = freeze_versions(versions)
        return RoutingContext(app, release_id, channel, frozen, claims["e"])
    except (KeyError, TypeError, ValueError) as exc:
        return Rejected(RejectKind.INVALID, f"context claims are not valid: {exc}")


def _members(header: str) -> list[str]:
    return [m.strip() for m in header.split(",") if m.strip()]


def find_in_baggage(header: str | None, key: str = BAGGAGE_KEY) -> str | None:
    """The (percent-decoded) value of ``key`` in a W3C ``baggage`` header, if any."""
    if not header or len(header) > MAX_BAGGAGE_BYTES:
        return None
    for member in _members(header):
        name, sep, rest = member.partition("=")
        if sep and name.strip() == key:
            return unquote(rest.split(";", 1)[0].strip())
    return None


def set_in_baggage(header: str | None, value: str | None, key: str = BAGGAGE_KEY) -> str:
    """Return a ``baggage`` header with ``key`` set to ``value`` (or removed when None).

    Other members are kept in order. When the result would pass the W3C limits
    (180 members, 8192 bytes) the oldest foreign members are dropped first,
    since coalmine's own member is what keeps the chain consistent.
    """
    others = [m for m in _members(header or "") if m.partition("=")[0].strip() != key]
    ours = [f"{key}={value}"] if value is not None else []
    while others and (
        len(others) + len(ours) > MAX_BAGGAGE_MEMBERS
        or len(",".join(others + ours).encode("utf-8", "surrogatepass")) > MAX_BAGGAGE_BYTES
    ):
        others.pop(0)
    return ",".join(others + ours)
