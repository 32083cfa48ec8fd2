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
    """Make the control plane hold what the file says: create what is missing (app,
    functions, versions), and start a release to each function's `version:` that differs
    from the running one; applying the same file again changes nothing."""
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
        console.print(f"app {result['app']}: unchanged (the store holds what the file says)")
    else:
        console.print(f"app {result['app']}: {verb}")
        for change in result["changes"]:
            console.print(f"  - {change}", markup=False)
    for note in result.get("notes", []):
        console.print(f"  note: {note}", markup=False)
    if result.get("release") and result["changed"] and not result.get("dry_run"):
        console.print(f"follow it: coalmine release status {result['release']} --watch")
