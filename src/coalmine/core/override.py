"""Tester overrides: a signed, expiring token that forces a channel.

An authorised tester (someone holding a signing key, through `coalmine` or the
API) issues an override so a candidate version can be called directly before
any user sees it. It may be bound to a release and to a user key; unbound, it
applies to any release of the app / any user. Rollback still wins.

Claims: ``a`` app, ``c`` channel code, ``r`` release id or null, ``u`` user
key or null, ``e`` expiry.
"""

from __future__ import annotations

from dataclasses import dataclass

from coalmine.core.context import CHANNEL_CODES, CODE_CHANNELS
from coalmine.core.errors import InvalidInput
from coalmine.core.model import Channel, validate_name
from coalmine.core.signing import Keyring, Rejected, RejectKind, seal, unseal

__all__ = ["MAX_OVERRIDE_BYTES", "PURPOSE", "Override", "decode_override", "issue_override"]

PURPOSE = "coalmine-override"
MAX_OVERRIDE_BYTES = 1024


@dataclass(frozen=True, slots=True)
class Override:
    app: str
    channel: Channel
    release_id: str | None
    user_key: str | None
    expires_at: int

    def applies(self, app: str, release_id: str | None, user_key: str | None) -> bool:
        return (
            self.app == app
            and (self.release_id is None or self.release_id == release_id)
            and (self.user_key is None or self.user_key == user_key)
        )


def issue_override(
    keyring: Keyring,
    *,
    app: str,
    channel: Channel,
    now: float,
    ttl: float,
    release_id: str | None = None,
    user_key: str | None = None,
) -> str:
    """A signed override token valid for ``ttl`` seconds."""
    validate_name(app, "app")
    if ttl <= 0:
        raise InvalidInput("an override needs a positive time to live")
    if channel not in CODE_CHANNELS.values():
        raise InvalidInput(f"invalid channel {channel!r}: use stable or canary")
    claims = {
        "a": app,
        "c": CHANNEL_CODES[Channel(channel)],
        "r": release_id,
        "u": user_key,
        "e": int(now + ttl),
    }
    return seal(PURPOSE, keyring, claims)


def decode_override(token: object, keyring: Keyring, *, now: float) -> Override | Rejected:
    """Verify an override token; never raises."""
    claims = unseal(PURPOSE, keyring, token, now=now, max_bytes=MAX_OVERRIDE_BYTES)
    if isinstance(claims, Rejected):
        return claims
    app, code, rel, user = claims.get("a"), claims.get("c"), claims.get("r"), claims.get("u")
    if (
        not isinstance(app, str)
        or not isinstance(code, str)
        or code not in CODE_CHANNELS
        or not (rel is None or isinstance(rel, str))
        or not (user is None or isinstance(user, str))
    ):
        return Rejected(RejectKind.INVALID, "override claims are not valid")
    return Override(app, CODE_CHANNELS[code], rel, user, claims["e"])
