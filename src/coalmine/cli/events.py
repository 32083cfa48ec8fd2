"""`coalmine events`: the audit log of releases (who, what, why, when)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from coalmine.cli.client import ApiClient
from coalmine.cli.options import JsonOpt, TokenOpt, UrlOpt
from coalmine.cli.output import console, pct, print_json, when

__all__ = ["command"]


def command(
    app_name: Annotated[
        str | None, typer.Option("--app", metavar="APP", help="Only this app.")
    ] = None,
    release: Annotated[
        str | None, typer.Option("--release", metavar="RELEASE", help="Only this release.")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=1000, metavar="N", help="At most this many.")
    ] = 100,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List audit events, oldest first."""
    with ApiClient(url, token) as client:
        events = client.get("/v1/events", app=app_name, release=release, limit=limit)
    if as_json:
        print_json(events)
        return
    table = Table(
        "#", "when (UTC)", "app", "release", "actor", "event", "phase", "exposure", "message"
    )
    for ev in events:
        table.add_row(
            str(ev["id"]),
            when(ev["at"]),
            ev["app"],
            ev["release_id"] or "-",
            ev["actor"],
            ev["kind"],
            ev["phase"] or "-",
            pct(ev["exposure"]),
            ev["message"],
        )
    console.print(table)
