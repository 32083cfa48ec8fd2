"""The data-plane gateway: an ASGI reverse proxy that routes users to function versions.

It identifies the user, decides with the one routing function of
`coalmine.core`, and calls the decided version's target through the
`FunctionTarget` port of its kind: `HttpTarget` (an HTTP upstream),
`LocalTarget` (a Python handler run in-process), `LambdaTarget` (a Lambda
version through the Invoke API), or `MockTarget` (a function
of the call, for tests). See docs/gateway.md.

Needs the ``gateway`` extra (uvicorn, httptools): ``pip install 'coalmine[gateway]'``.
"""

from coalmine._extras import require

require("httptools", "gateway")

from coalmine.core.ports import Call, FunctionTarget  # noqa: E402
from coalmine.gateway.app import (  # noqa: E402
    CHANNEL_HEADER,
    OVERRIDE_HEADER,
    RELEASE_HEADER,
    USER_HEADER,
    VERSION_HEADER,
    Gateway,
    create_gateway,
)
from coalmine.gateway.asgi import CallFailed, Reply  # noqa: E402
from coalmine.gateway.config import GatewayConfig  # noqa: E402
from coalmine.gateway.identity import Identity, IdentityConfig, IdentitySource  # noqa: E402
from coalmine.gateway.lambda_target import LambdaTarget  # noqa: E402
from coalmine.gateway.mock import MockTarget  # noqa: E402
from coalmine.gateway.runtime import HandlerContext, LocalRuntime, LocalTarget  # noqa: E402
from coalmine.gateway.source import (  # noqa: E402
    ManagedSource,
    SnapshotSource,
    StaticSource,
    SyncSource,
)
from coalmine.gateway.upstream import HttpTarget, HttpUpstream  # noqa: E402

__all__ = [
    "CHANNEL_HEADER",
    "OVERRIDE_HEADER",
    "RELEASE_HEADER",
    "USER_HEADER",
    "VERSION_HEADER",
    "Call",
    "CallFailed",
    "FunctionTarget",
    "Gateway",
    "GatewayConfig",
    "HandlerContext",
    "HttpTarget",
    "HttpUpstream",
    "Identity",
    "IdentityConfig",
    "IdentitySource",
    "LambdaTarget",
    "LocalRuntime",
    "LocalTarget",
    "ManagedSource",
    "MockTarget",
    "Reply",
    "SnapshotSource",
    "StaticSource",
    "SyncSource",
    "create_gateway",
]
