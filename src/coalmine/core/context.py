"""The routing context: a decision serialised into a signed W3C baggage entry.

The context is what makes a chain run one version set: the first hop decides,
signs the decision into the ``coalmine`` baggage member, and every hop after it
(HTTP, message headers, a Kinesis envelope) reads it back instead of deciding
again. Signing (see `coalmine.core.signing`) means a client cannot forge itself
into a channel; expiry bounds how long a chain can stay pinned, and it is a hard
bound: a hop that honours a context and signs it again keeps its expiry
(`Decision.expires_at`), so no one keeps a pinned chain alive by re-signing it.

A context grants its channel to the user it was decided for and to no one
else: it carries a keyed hash of that user's key (`bind_user`), and a hop that
knows whom it serves refuses a context of another user (``other_user``) or
one that names no user (``unbound``, signed by a coalmine from before
bindings), and decides that user afresh. A hop that does not know its user
(a consumer of a header-less stream) honours the context and passes its
binding on (`Decision.binding`). The SDK's routers bind every decision to its
user as they make it (`bound`), so a context signed from it is that user's
without the caller naming the user again.

Claims: ``a`` app, ``r`` release id, ``c`` channel (``"c"`` canary, ``"s"``
stable), ``v`` function -> version map, ``e`` expiry (Unix seconds), ``u``
the user binding ``<kid>.<tag>`` (absent in contexts of older coalmines).
"""

from __future__ import annotations

import functools
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import unquote

from coalmine.core.errors import InvalidInput
from coalmine.core.model import Channel, Decision, VersionMap, freeze_versions, validate_name
from coalmine.core.signing import (
    KEY_ID_PATTERN,
    KeyedMac,
    Keyring,
    Rejected,
    RejectKind,
    Sealer,
    b64url,
    claims_json,
    unseal,
)

__all__ = [
    "BAGGAGE_KEY",
    "CHANNEL_CODES",
    "CODE_CHANNELS",
    "DEFAULT_TTL_SECONDS",
    "MAX_BAGGAGE_BYTES",
    "MAX_CONTEXT_BYTES",
    "PURPOSE",
    "USER_PURPOSE",
    "ContextSigner",
    "ContextTooLarge",
    "RoutingContext",
    "bind_user",
    "bound",
    "check_user",
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
USER_PURPOSE = "coalmine-user"
_TAG_BYTES = 12
_BINDING = re.compile(rf"({KEY_ID_PATTERN.pattern})\.([A-Za-z0-9_-]{{16}})")


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
    binding: str | None = None
    """``<kid>.<tag>``: the keyed hash of the user it was decided for (`bind_user`), or None
    for a context signed by a coalmine from before bindings"""


@functools.lru_cache(maxsize=16)
def _user_mac(key: bytes) -> KeyedMac:
    """Keyed once per key (a `KeyedMac` is never changed: each digest works on a copy)."""
    return KeyedMac(key, USER_PURPOSE.encode() + b"\x00")


def _tag(mac: KeyedMac, user_key: str) -> str:
    return b64url(mac.digest(user_key.encode("utf-8", "surrogatepass"))[:_TAG_BYTES])


def bind_user(keyring: Keyring, user_key: str) -> str:
    """The binding a context carries of ``user_key``: ``<kid>.<tag>`` with the active key.

    ``tag`` is base64url (no padding) of the first 12 bytes of
    ``HMAC-SHA256(key[kid], "coalmine-user" || 0x00 || UTF-8(user_key))``: keyed,
    so the baggage does not reveal the user key to whoever reads it.
    """
    return f"{keyring.active}.{_tag(_user_mac(keyring.keys[keyring.active]), user_key)}"


def bound(decision: Decision, keyring: Keyring | None, user_key: str | None) -> Decision:
    """``decision`` carrying the binding of ``user_key``, so that the context signed from it
    (`encode_context` without a user) is that user's. Unchanged when there is nothing to bind:
    no key, no user, no release, or a binding already (from the context it was pinned by)."""
    if keyring is None or not user_key or decision.release_id is None or decision.binding:
        return decision
    return replace(decision, binding=bind_user(keyring, user_key))


def check_user(context: RoutingContext, keyring: Keyring, user_key: str | None) -> Rejected | None:
    """Why ``context`` is not honoured for ``user_key``, or None when it is.

    A hop that does not know its user (``user_key`` None or empty) cannot
    check: the context is honoured (a downstream hop of its chain).
    """
    if not user_key:
        return None
    if context.binding is None:
        return Rejected(
            RejectKind.UNBOUND,
            "the context names no user (signed by a coalmine from before contexts were bound"
            " to users): decided afresh for this user",
        )
    kid, _, tag = context.binding.partition(".")
    key = keyring.keys.get(kid)
    if key is None:
        return Rejected(
            RejectKind.UNKNOWN_KEY, f"the context's user is bound with unknown key id {kid!r}"
        )
    if not hmac.compare_digest(tag, _tag(_user_mac(key), user_key)):
        return Rejected(RejectKind.OTHER_USER, "the context was decided for another user")
    return None


class ContextSigner:
    """The routing contexts of one decision with one expiry, signed for each user who gets it.

    What does not depend on the user (the claims' text, the keyed HMACs) is
    built once: the gateway signs a context per request and keeps a signer
    per decision and second. `encode_context` is one signer's one context.
    """

    __slots__ = ("_binding", "_head", "_kid", "_sealer", "_tail", "_user_mac", "decision")

    def __init__(self, decision: Decision, keyring: Keyring, *, expires_at: int) -> None:
        if decision.release_id is None:
            raise InvalidInput("a decision without a release has no routing context")
        if decision.expires_at is not None:
            # pinned by a context: its expiry is a hard bound, re-signing never extends it
            expires_at = min(expires_at, decision.expires_at)
        self.decision = decision
        head = claims_json(
            {
                "a": decision.app,
                "c": CHANNEL_CODES[decision.channel],
                "e": expires_at,
                "r": decision.release_id,
            }
        )
        # the claims' keys sort a, c, e, r, u, v: the binding goes between head and tail
        self._head = head[:-1]
        self._tail = ',"v":' + claims_json(dict(decision.versions)) + "}"
        self._binding = decision.binding
        self._kid = keyring.active
        self._user_mac = _user_mac(keyring.keys[keyring.active])
        self._sealer = Sealer(PURPOSE, keyring)

    def sign(self, user: str | None) -> str:
        """The context bound to ``user``; with None, to the decision's own binding (if any)."""
        binding = f"{self._kid}.{_tag(self._user_mac, user)}" if user else self._binding
        body = self._head + (f',"u":"{binding}"' if binding is not None else "") + self._tail
        token = self._sealer.seal_json(body)
        if len(token) > MAX_CONTEXT_BYTES:
            d = self.decision
            raise ContextTooLarge(
                f"routing context for app {d.app!r} is {len(token)} bytes,"
                f" over the {MAX_CONTEXT_BYTES}-byte limit: shorten function or version names"
            )
        return token


def encode_context(
    decision: Decision,
    keyring: Keyring,
    *,
    now: float,
    ttl: float = DEFAULT_TTL_SECONDS,
    user: str | None = None,
) -> str | None:
    """Sign a decision into a baggage value; ``None`` when there is nothing to pin.

    ``user`` is the key of the user the decision is for: the context is
    bound to it. A hop that does not know its user passes None, and the
    context keeps the binding of the context it was pinned by
    (``decision.binding``), or names no user.

    A decision without a release (no release, or an error) is not propagated:
    each hop then decides for itself, which gives the same stable versions.

    The context expires at ``now + ttl``, or earlier: a decision pinned by a
    context keeps that context's expiry (``decision.expires_at``).
    """
    if decision.release_id is None:
        return None
    return ContextSigner(decision, keyring, expires_at=int(now + ttl)).sign(user)


def decode_context(
    value: object, keyring: Keyring, *, now: float, user: str | None = None
) -> RoutingContext | Rejected:
    """Verify a baggage value for the hop's ``user`` (see `check_user`); never raises."""
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
        binding = claims.get("u")
        if binding is not None and not (isinstance(binding, str) and _BINDING.fullmatch(binding)):
            raise ValueError("bad user binding")
        context = RoutingContext(app, release_id, channel, frozen, claims["e"], binding)
    except (KeyError, TypeError, ValueError) as exc:
        return Rejected(RejectKind.INVALID, f"context claims are not valid: {exc}")
    refused = check_user(context, keyring, user)
    return context if refused is None else refused


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
