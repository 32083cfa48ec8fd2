"""`GatewayConfig`: everything one gateway process is told at start.

The app it fronts, where its control plane is and the sdk key to read it,
the keyring that verifies incoming routing contexts and signs outgoing ones,
how users are identified, and the limits of a call (timeouts, connection
pool, local body size). Validated at construction: a bad value raises
`InvalidInput` naming it. ``to_json`` / ``from_json`` carry a config to the
worker processes of ``coalmine gateway --workers N``.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from coalmine.core.context import DEFAULT_TTL_SECONDS
from coalmine.core.errors import InvalidInput
from coalmine.core.model import validate_name
from coalmine.core.signing import Keyring
from coalmine.gateway.identity import IdentityConfig, IdentitySource

__all__ = ["DEFAULT_LOCAL_BODY_BYTES", "GatewayConfig"]

DEFAULT_LOCAL_BODY_BYTES = 6 * 1024 * 1024
"""the request payload limit of a Lambda invocation, kept for local handlers"""


def _positive(value: float, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InvalidInput(f"{what} must be a positive number, not {value!r}")


@dataclass(frozen=True)
class GatewayConfig:
    """One gateway's settings. Only ``app`` is required (tests pass a source directly)."""

    app: str
    control_plane_url: str | None = None
    sdk_key: str | None = None
    cache_dir: str | None = None
    """where the last snapshot is kept on disk, for a restart while the control plane is down"""
    keyring: Keyring | None = None
    """verifies incoming contexts and overrides, signs the outgoing context; None: no propagation"""
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    anonymous_keyring: Keyring | None = None
    """signs anonymous-id cookies; default: ``keyring``, else a random key made with the config
    (shared by the workers of one `coalmine gateway`, new at each start)"""
    timeout: float = 30.0
    """seconds for a whole call: an upstream exchange (body included) or a local handler"""
    connect_timeout: float = 5.0
    pool_size: int = 100
    """most open connections to HTTP upstreams, across hosts"""
    local_workers: int = 32
    """threads that run local handlers"""
    max_local_body: int = DEFAULT_LOCAL_BODY_BYTES
    context_ttl: float = DEFAULT_TTL_SECONDS
    """seconds an injected routing context stays valid downstream"""

    def __post_init__(self) -> None:
        validate_name(self.app, "app")
        if self.anonymous_keyring is None:
            anon = self.keyring or Keyring.single(secrets.token_bytes(32), "anon")
            object.__setattr__(self, "anonymous_keyring", anon)
        if self.control_plane_url is not None and not self.control_plane_url.startswith(
            ("http://", "https://")
        ):
            raise InvalidInput(
                f"invalid control plane URL {self.control_plane_url!r}: use http(s)://host:port"
            )
        _positive(self.timeout, "timeout")
        _positive(self.connect_timeout, "connect timeout")
        _positive(self.context_ttl, "context ttl")
        for what, n in (
            ("pool size", self.pool_size),
            ("local workers", self.local_workers),
            ("max local body", self.max_local_body),
        ):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise InvalidInput(f"{what} must be a whole number of at least 1, not {n!r}")

    def to_json(self) -> str:
        """Serialise, secrets included (for a child process's environment, not for logs)."""
        data = asdict(self)
        data["identity"]["order"] = [str(s) for s in self.identity.order]
        data["keyring"] = _ring_to_json(self.keyring)
        data["anonymous_keyring"] = _ring_to_json(self.anonymous_keyring)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> GatewayConfig:
        data: dict[str, Any] = json.loads(text)
        ident = dict(data.pop("identity"))
        ident["order"] = tuple(IdentitySource(s) for s in ident["order"])
        keyring = _ring_from_json(data.pop("keyring"))
        anonymous = _ring_from_json(data.pop("anonymous_keyring", None))
        return cls(
            **data,
            keyring=keyring,
            anonymous_keyring=anonymous,
            identity=IdentityConfig(**ident),
        )


def _ring_to_json(keyring: Keyring | None) -> dict[str, Any] | None:
    if keyring is None:
        return None
    return {
        "active": keyring.active,
        "keys": {k: base64.b64encode(v).decode() for k, v in keyring.keys.items()},
    }


def _ring_from_json(ring: dict[str, Any] | None) -> Keyring | None:
    if ring is None:
        return None
    return Keyring({k: base64.b64decode(v) for k, v in ring["keys"].items()}, ring["active"])
