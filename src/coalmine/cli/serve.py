"""`coalmine serve`: the control plane (REST API, routing streams) and the rollout controller.

One process serves the API and, unless ``--no-controller``, runs the
controller too; several replicas on one PostgreSQL elect a single acting
controller between them and share changes through LISTEN/NOTIFY.
"""

from __future__ import annotations

import logging
import sys
import textwrap
from typing import Annotated, Any

import typer

from coalmine._extras import require
from coalmine.cli.output import err_console

__all__ = ["DEFAULT_PORT", "ENVIRONMENT", "EPILOG", "command"]

DEFAULT_PORT = 8700

ENVIRONMENT: tuple[tuple[str, str], ...] = (
    (
        "COALMINE_SIGNING_KEYS",
        "`kid:secret[,kid:secret...]`: the keys that sign discovery's routing contexts (and"
        " that gateways and SDKs verify with); unset, the keys made on the first start and kept"
        " in the store",
    ),
    (
        "COALMINE_GATEWAY_URL",
        "the gateway's base URL: discovery answers `<url>/<function>` for versions whose"
        " target is not a URL",
    ),
    (
        "COALMINE_BOOTSTRAP_TOKEN",
        "the admin token made on the first start with no admin token (else a random one,"
        " printed once)",
    ),
    (
        "COALMINE_METRICS_DEPRECATED_NAMES",
        "`1`: `/metrics` also carries the metric names used before the renames; anything but"
        " `0` or `1` stops the server (exit 2)",
    ),
    (
        "AWS_*",
        "the standard AWS configuration chain (`AWS_REGION`, `AWS_PROFILE`, credentials,"
        " `AWS_ENDPOINT_URL_LAMBDA`, ...): Lambda versions and aliases, CloudWatch",
    ),
)
"""What `coalmine serve` reads from the environment besides its options' variables: its
``--help`` and docs/configuration.md list them (tests/cli/test_serve_environment.py checks
that every variable the server reads is listed)."""

EPILOG = "\b\nEnvironment, besides the options' [env var: ...]:\n" + "\n".join(
    f"  {name}\n"
    + textwrap.fill(meaning.replace("`", ""), 76, initial_indent="    ", subsequent_indent="    ")
    for name, meaning in ENVIRONMENT
)


class _Runner:
    """What the API process runs beside the server: event webhooks and the controller."""

    def __init__(self, service: Any, feed: Any, *, controller: bool, interval: float) -> None:
        from coalmine.controller.hooks import HookDispatcher
        from coalmine.controller.leader import leadership_for
        from coalmine.controller.loop import Controller
        from coalmine.controller.webhooks import EventWebhooks

        self.webhooks = EventWebhooks(service.store)
        service.sinks.append(self.webhooks)
        self.hooks = HookDispatcher()
        self.controller = (
            Controller(
                service,
                feed=feed,
                leadership=leadership_for(service.store),
                hooks=self.hooks,
                interval=interval,
            )
            if controller
            else None
        )

    def start(self) -> None:
        self.webhooks.start()
        if self.controller is not None:
            self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
        self.hooks.close()
        self.webhooks.stop()


def _tell_how_to_share_keys(url: str) -> None:
    """Said on the first start only: the start that made the stored signing keys."""
    print(
        "coalmine: made the signing keys of routing contexts (kept in the store: restarts and"
        " replicas sign with the same keys). Give gateways and SDKs the same keys (with an"
        " admin token in COALMINE_TOKEN):\n"
        f'  export COALMINE_SIGNING_KEYS="$(coalmine signing-keys --url {url})"\n'
        "This is shown only on this first start; docs/context.md#keys-and-rotation says more.",
        file=sys.stderr,
        flush=True,
    )


def command(
    host: Annotated[str, typer.Option(metavar="HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            envvar="COALMINE_PORT", min=1, max=65535, metavar="PORT", help="Port to listen on."
        ),
    ] = DEFAULT_PORT,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="COALMINE_DATABASE_URL",
            metavar="URL",
            help="SQLAlchemy URL of the store (default sqlite:///coalmine.db;"
            " postgresql+psycopg://... for several replicas).",
            show_default=False,
        ),
    ] = None,
    controller: Annotated[
        bool,
        typer.Option(
            "--controller/--no-controller",
            help="Also run the rollout controller (replicas elect one leader).",
        ),
    ] = True,
    interval: Annotated[
        float,
        typer.Option(min=0.05, metavar="SECONDS", help="Longest wait between controller ticks."),
    ] = 1.0,
    max_body_bytes: Annotated[
        int | None,
        typer.Option(
            "--max-body-bytes",
            envvar="COALMINE_MAX_BODY_BYTES",
            min=1,
            metavar="BYTES",
            help="Largest request body read; a larger one is answered 413 before it is read"
            " (default 4 MiB).",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[
        str, typer.Option(metavar="LEVEL", help="debug, info, warning or error.")
    ] = "info",
    public_docs: Annotated[
        bool,
        typer.Option(
            "--public-docs",
            envvar="COALMINE_PUBLIC_DOCS",
            help="Serve /openapi.json, /docs and /redoc without a token (by default they need"
            " a viewer token, like every route but /healthz).",
        ),
    ] = False,
    outbound_allow: Annotated[
        str,
        typer.Option(
            "--outbound-allow",
            envvar="COALMINE_OUTBOUND_ALLOW",
            metavar="LIST",
            help="Private and loopback destinations hooks, event webhooks and Prometheus"
            " alarms may reach: 'private' (all of them), 'none', or a comma list of CIDRs"
            " and host names. Public addresses are always allowed; link-local and cloud"
            " metadata addresses (169.254.0.0/16) never are.",
        ),
    ] = "private",
) -> None:
    """Serve the control plane API and run the rollout controller."""
    require("fastapi", "server")
    uvicorn = require("uvicorn", "server")
    from coalmine.store.db import database_url as resolve_db
    from coalmine.web.app import create_app

    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise typer.BadParameter("use debug, info, warning or error", param_hint="--log-level")
    from coalmine.core.errors import InvalidInput
    from coalmine.integrations.outbound import OutboundPolicy, set_policy
    from coalmine.metrics.exposition import deprecated_names

    deprecated_names()  # a bad COALMINE_METRICS_DEPRECATED_NAMES fails here, not at a scrape

    try:
        set_policy(OutboundPolicy.parse(outbound_allow))
    except InvalidInput as exc:
        raise typer.BadParameter(str(exc), param_hint="--outbound-allow") from None
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    url = resolve_db(database_url)
    app = create_app(
        database_url=url,
        start_controller=True,
        controller_factory=lambda service, feed: _Runner(
            service, feed, controller=controller, interval=interval
        ),
        max_body_bytes=max_body_bytes,
        public_docs=public_docs,
    )
    shown = url.split("@")[-1] if "@" in url else url
    err_console.print(
        f"coalmine control plane on http://{host}:{port} (store {shown};"
        f" controller {'on' if controller else 'off'})"
    )
    if app.state.signing_keys_made:
        _tell_how_to_share_keys(f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}")
    # Routing streams never end on their own: give them a short grace on shutdown.
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=3,
    )
