"""The data-plane gateway: an ASGI reverse proxy that routes users to function versions.

It identifies the user, decides with the one routing function of
`coalmine.core`, and calls the decided version's target: an HTTP upstream
or a local Python handler run in-process. See docs/gateway.md.

Needs the ``gateway`` extra (uvicorn, httptools): ``pip install 'coalmine[gateway]'``.
"""

from coalmine._extras import require

require("httptools", "gateway")

from coalmine.gateway.app import (  # noqa: E402
    CHANNEL_HEADER,
    OVERRIDE_HEADER,
    RELEASE_HEADER,
    USER_HEADER,
    VERSION_HEADER,
    Gateway,
    create_gateway,
)
from coalmine.gateway.asgi import CallFailed  # noqa: E402
from coalmine.gateway.config import GatewayConfig  # noqa: E402
from coalmine.gateway.identity import Identity, IdentityConfig, IdentitySource  # noqa: E402
from coalmine.gateway.runtime import HandlerContext, LocalRuntime  # noqa: E402
from coalmine.gateway.source import (  # noqa: E402
    ManagedSource,
    SnapshotSource,
    StaticSource,
    SyncSource,
)
from coalmine.gateway.upstream import HttpUpstream  # noqa: E402

__all__ = [
    "CHANNEL_HEADER",
    "OVERRIDE_HEADER",
    "RELEASE_HEADER",
    "USER_HEADER",
    "VERSION_HEADER",
    "CallFailed",
    "Gateway",
    "GatewayConfig",
    "HandlerContext",
    "HttpUpstream",
    "Identity",
    "IdentityConfig",
    "IdentitySource",
    "LocalRuntime",
    "ManagedSource",
    "SnapshotSource",
    "StaticSource",
    "SyncSource",
    "create_gateway",
]
