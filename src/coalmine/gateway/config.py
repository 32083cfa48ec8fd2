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
        keyring = self.keyring
        data["keyring"] = (
            None
            if keyring is None
            else {
                "active": keyring.active,
                "keys": {k: base64.b64encode(v).decode() for k, v in keyring.keys.items()},
            }
        )
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> GatewayConfig:
        data: dict[str, Any] = json.loads(text)
        ident = dict(data.pop("identity"))
        ident["order"] = tuple(IdentitySource(s) for s in ident["order"])
        ring = data.pop("keyring")
        keyring = (
            None
            if ring is None
            else Keyring({k: base64.b64decode(v) for k, v in ring["keys"].items()}, ring["active"])
        )
        return cls(**data, keyring=keyring, identity=IdentityConfig(**ident))
