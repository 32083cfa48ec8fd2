"""`coalmine token ...`: create, list and revoke API tokens, sdk and browser keys.

These act on the store directly (like a database's own admin command), so
the first admin token can be made before any token exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from coalmine.cli.options import JsonOpt
from coalmine.cli.output import console, err_console, print_json, when

if TYPE_CHECKING:
    from coalmine.controller.tokens import TokenService

__all__ = ["app"]

app = typer.Typer(help="Create, list and revoke API tokens and SDK keys.", no_args_is_help=True)

DbOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="COALMINE_DATABASE_URL",
        metavar="URL",
        help="The store (default sqlite:///coalmine.db).",
        show_default=False,
    ),
]


def _tokens(database_url: str | None) -> TokenService:
    from coalmine._extras import require

    require("sqlalchemy", "server")
    from coalmine.controller.tokens import TokenService
    from coalmine.store.db import open_store

    return TokenService(open_store(database_url))


@app.command("create")
def create(
    name: Annotated[str, typer.Option(metavar="NAME", help="Who or what uses it.")],
    role: Annotated[
        str,
        typer.Option(
            metavar="ROLE",
            help="admin, deployer or viewer (people and tools); sdk (one app's servers: its"
            " SDKs and gateways; never in a page); browser (one app's web pages: discovery and"
            " OFREP for one user); scraper (Prometheus: GET /metrics only).",
        ),
    ],
    app_name: Annotated[
        str | None,
        typer.Option("--app", metavar="APP", help="The app of an sdk or browser key."),
    ] = None,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a token and print it once: it is stored only as a hash."""
    created = _tokens(database_url).create(name, role, app_name)
    if as_json:
        print_json(created.model_dump())
        return
    print(created.token)
    err_console.print(
        f"created {created.role} token {created.name!r} (id {created.id})"
        + (f" for app {created.app}" if created.app else "")
        + "; it is shown only this once"
    )


@app.command("list")
def list_tokens(database_url: DbOpt = None, as_json: JsonOpt = False) -> None:
    """List tokens (never their secrets)."""
    tokens = _tokens(database_url).list()
    if as_json:
        print_json([t.model_dump() for t in tokens])
        return
    table = Table("id", "name", "role", "app", "prefix", "created", "revoked")
    for t in tokens:
        table.add_row(
            str(t.id),
            t.name,
            t.role,
            t.app or "-",
            t.prefix + "...",
            when(t.created_at),
            when(t.revoked_at),
        )
    console.print(table)


@app.command("revoke")
def revoke(
    token_id: Annotated[int, typer.Argument(metavar="ID", help="The token's id (see list).")],
    database_url: DbOpt = None,
) -> None:
    """Revoke a token: it stops working at once."""
    t = _tokens(database_url).revoke(token_id)
    console.print(f"revoked token {t.id} ({t.name})")
