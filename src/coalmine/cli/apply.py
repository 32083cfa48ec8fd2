"""`coalmine apply -f coalmine.yaml`: make the control plane hold what a file describes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from coalmine.cli.client import ApiClient, CliError
from coalmine.cli.options import JsonOpt, TokenOpt, UrlOpt
from coalmine.cli.output import console, print_json

__all__ = ["command"]


def command(
    file: Annotated[
        Path,
        typer.Option(
            "--file", "-f", metavar="FILE", help="The coalmine.yaml to apply ('-' for stdin)."
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the changes; make none.")
    ] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create what is missing (app, functions, versions); applying twice changes nothing."""
    if str(file) == "-":
        import sys

        text = sys.stdin.read()
    else:
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot read {file}: {exc.strerror}", 2) from exc
    with ApiClient(url, token) as client:
        result = client.post(
            "/v1/apply",
            content=text.encode(),
            headers={"Content-Type": "application/yaml"},
            params={"dry_run": str(dry_run).lower()},
        )
    if as_json:
        print_json(result)
        return
    verb = "would" if result.get("dry_run") else "did"
    if not result["changed"]:
        console.print(f"app {result['app']}: up to date, nothing to change")
        return
    console.print(f"app {result['app']}: {verb}")
    for change in result["changes"]:
        console.print(f"  - {change}")
