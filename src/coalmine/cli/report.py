"""`coalmine report RELEASE --out FILE`: a release's charts as PNG, SVG or HTML.

Reads the release, its events and its analysis runs over the API and writes
one file; the drawing is `coalmine.cli.report_chart`, behind the ``report``
extra (matplotlib).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from coalmine._extras import MissingExtraError, require
from coalmine.cli.client import ApiClient, CliError
from coalmine.cli.options import TokenOpt, UrlOpt
from coalmine.cli.release import release_events, resolve

__all__ = ["command"]

FORMATS = (".png", ".svg", ".html")


def analysis_runs(client: ApiClient, release_id: str) -> list[dict[str, Any]]:
    """Every analysis run of a release, oldest first (paged like its events)."""
    return client.get_all(f"/v1/releases/{release_id}/analysis")


def command(
    release_ref: Annotated[
        str,
        typer.Argument(
            metavar="RELEASE", help="A release id, or an app (its active, else latest, release)."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", metavar="FILE", help="Where to write: a .png, .svg or .html file."
        ),
    ],
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Chart a release (exposure, per-version errors and latency, verdicts) to a file."""
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise CliError(f"--out must end in .png, .svg or .html, got {str(out)!r}", 2)
    try:
        require("matplotlib", "report")
    except MissingExtraError as exc:
        raise CliError(str(exc), 2) from None
    from coalmine.cli import report_chart

    with ApiClient(url, token) as client:
        release = resolve(client, release_ref)
        events = release_events(client, release["id"])
        runs = analysis_runs(client, release["id"])
    data = report_chart.series(release, events, runs)
    body = (
        report_chart.html_page(data).encode()
        if suffix == ".html"
        else report_chart.render(data, suffix[1:])
    )
    try:
        out.write_bytes(body)
    except OSError as exc:
        raise CliError(f"cannot write {str(out)!r}: {exc.strerror or exc}", 2) from None
    print(f"wrote {out} ({len(body)} bytes)")
