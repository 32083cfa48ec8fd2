"""Options shared by the client commands (control plane URL, token, JSON output)."""

from __future__ import annotations

from typing import Annotated

import typer

from coalmine.cli.client import DEFAULT_URL

__all__ = ["JsonOpt", "TokenOpt", "UrlOpt"]

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="COALMINE_URL",
        help=f"Control plane URL (default {DEFAULT_URL}).",
        metavar="URL",
        show_default=False,
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="COALMINE_TOKEN",
        help="API token.",
        metavar="TOKEN",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
