"""`coalmine gateway`: run the data-plane gateway of one app under uvicorn.

The command validates its options into a `GatewayConfig`, hands it to the
uvicorn worker processes through ``COALMINE_GATEWAY_CONFIG`` (so
``--workers N`` works: uvicorn imports `worker_app` in each), and serves.
The signing keys come from ``COALMINE_SIGNING_KEYS``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from coalmine._extras import require
from coalmine.cli.output import err_console

if TYPE_CHECKING:
    from coalmine.gateway.app import Gateway

__all__ = ["CONFIG_ENV", "DEFAULT_PORT", "command", "worker_app"]

DEFAULT_PORT = 8800
CONFIG_ENV = "COALMINE_GATEWAY_CONFIG"
_LEVELS = ("debug", "info", "warning", "error")


def worker_app() -> Gateway:
    """The uvicorn factory of each worker: the gateway of the config in the environment."""
    from coalmine.gateway.app import create_gateway
    from coalmine.gateway.config import GatewayConfig

    text = os.environ.get(CONFIG_ENV)
    if not text:
        raise RuntimeError(f"${CONFIG_ENV} is not set: start the gateway with `coalmine gateway`")
    return create_gateway(GatewayConfig.from_json(text))


def command(
    app: Annotated[
        str,
        typer.Option(
            "--app", envvar="COALMINE_APP", metavar="APP", help="The app whose functions to serve."
        ),
    ],
    control_plane: Annotated[
        str,
        typer.Option(
            "--control-plane",
            envvar="COALMINE_CONTROL_PLANE",
            metavar="URL",
            help="Control plane URL, e.g. http://127.0.0.1:8700.",
        ),
    ],
    sdk_key: Annotated[
        str,
        typer.Option(
            "--sdk-key",
            envvar="COALMINE_SDK_KEY",
            metavar="KEY",
            help="An sdk key of the app (coalmine token create --role sdk --app APP).",
        ),
    ],
    host: Annotated[str, typer.Option(metavar="HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=1, max=65535, metavar="PORT", help="Port to listen on.")
    ] = DEFAULT_PORT,
    user_header: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="Trust this header to name the user (e.g. x-user-id): only behind a proxy that"
            " sets it, since a client can send any value. Default: no header is trusted.",
            show_default=False,
        ),
    ] = None,
    user_cookie: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="Cookie holding the user key.", show_default=False),
    ] = None,
    jwt_claim: Annotated[
        str | None,
        typer.Option(
            metavar="CLAIM",
            help="Take the user key from this claim of an 'Authorization: Bearer' JWT"
            " (default sub when a JWT key is given).",
            show_default=False,
        ),
    ] = None,
    jwt_secret: Annotated[
        str | None,
        typer.Option(
            envvar="COALMINE_JWT_SECRET",
            metavar="SECRET",
            help="HS256 secret (at least 32 bytes) that JWTs must be signed with.",
            show_default=False,
        ),
    ] = None,
    jwt_public_key: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="PEM public key that JWTs must be signed with: RSA (RS256) or P-256 (ES256).",
            show_default=False,
        ),
    ] = None,
    jwt_jwks_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="JWKS URL whose RS256 / ES256 keys JWTs must be signed with (fetched at start"
            " and every 5 minutes).",
            show_default=False,
        ),
    ] = None,
    jwt_audience: Annotated[
        str | None,
        typer.Option(metavar="AUD", help="Accept only JWTs for this audience.", show_default=False),
    ] = None,
    jwt_issuer: Annotated[
        str | None,
        typer.Option(metavar="ISS", help="Accept only JWTs from this issuer.", show_default=False),
    ] = None,
    jwt_optional_exp: Annotated[
        bool,
        typer.Option(
            "--jwt-optional-exp",
            help="Accept JWTs without an exp claim (they never expire). Default: refused.",
        ),
    ] = False,
    jwt_unverified: Annotated[
        bool,
        typer.Option(
            "--jwt-unverified",
            help="Read JWT claims without checking signatures: only behind a proxy that"
            " verifies them (otherwise clients choose their own channel).",
        ),
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(min=0.001, metavar="SECONDS", help="Longest a call to a function may take."),
    ] = 30.0,
    connect_timeout: Annotated[
        float,
        typer.Option(min=0.001, metavar="SECONDS", help="Longest wait to connect to an upstream."),
    ] = 5.0,
    pool_size: Annotated[
        int, typer.Option(min=1, metavar="N", help="Most open connections to HTTP upstreams.")
    ] = 100,
    workers: Annotated[int, typer.Option(min=1, metavar="N", help="Worker processes.")] = 1,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Keep the last routing snapshot here, to start while the control plane is down.",
            show_default=False,
        ),
    ] = None,
    app_dir: Annotated[
        str, typer.Option(metavar="DIR", help="Where local handler modules are imported from.")
    ] = ".",
    log_level: Annotated[
        str, typer.Option(metavar="LEVEL", help="debug, info, warning or error.")
    ] = "info",
) -> None:
    """Serve an app's functions: identify users, route them, call their versions."""
    require("httptools", "gateway")
    uvicorn = require("uvicorn", "gateway")
    from coalmine.gateway.config import GatewayConfig
    from coalmine.gateway.identity import IdentityConfig
    from coalmine.gateway.server import uvicorn_options
    from coalmine.metrics.exposition import deprecated_names
    from coalmine.sdk.keys import keyring_from_env

    deprecated_names()  # a bad COALMINE_METRICS_DEPRECATED_NAMES fails here, not at a scrape

    if log_level.lower() not in _LEVELS:
        raise typer.BadParameter("use debug, info, warning or error", param_hint="--log-level")
    if (
        jwt_claim is not None
        and jwt_secret is None
        and jwt_public_key is None
        and jwt_jwks_url is None
        and not jwt_unverified
    ):
        raise typer.BadParameter(
            "reading a JWT claim needs --jwt-secret, --jwt-public-key or --jwt-jwks-url"
            " (or --jwt-unverified, see docs/gateway.md)",
            param_hint="--jwt-claim",
        )
    public_key: str | None = None
    if jwt_public_key is not None:
        try:
            public_key = jwt_public_key.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise typer.BadParameter(
                f"cannot read {jwt_public_key}: {exc}", param_hint="--jwt-public-key"
            ) from None
    keyring = keyring_from_env()
    config = GatewayConfig(
        app=app,
        control_plane_url=control_plane.rstrip("/"),
        sdk_key=sdk_key,
        keyring=keyring,
        identity=IdentityConfig(
            user_header=user_header or None,
            user_cookie=user_cookie or None,
            jwt_claim=jwt_claim or "sub",
            jwt_secret=jwt_secret,
            jwt_public_key=public_key,
            jwt_jwks_url=jwt_jwks_url,
            jwt_audience=jwt_audience,
            jwt_issuer=jwt_issuer,
            jwt_require_exp=not jwt_optional_exp,
            jwt_unverified=jwt_unverified,
        ),
        timeout=timeout,
        connect_timeout=connect_timeout,
        pool_size=pool_size,
        cache_dir=str(cache_dir) if cache_dir is not None else None,
    )
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if keyring is None:
        err_console.print(
            "coalmine: COALMINE_SIGNING_KEYS is not set: incoming routing contexts are"
            " ignored and none is sent downstream"
        )
    err_console.print(
        f"coalmine gateway for app {app} on http://{host}:{port}"
        f" (control plane {config.control_plane_url}; {workers} worker(s))"
    )
    err_console.print(f"coalmine: {config.identity.describe()}", highlight=False)
    if keyring is None:
        err_console.print(
            "coalmine: anonymous ids are signed with a key made at start: they change"
            " when the gateway restarts (set COALMINE_SIGNING_KEYS to keep them)"
        )
    os.environ[CONFIG_ENV] = config.to_json()
    uvicorn.run(
        "coalmine.cli.gateway:worker_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        app_dir=app_dir,
        log_level=log_level.lower(),
        timeout_graceful_shutdown=3,
        **uvicorn_options(),
    )
