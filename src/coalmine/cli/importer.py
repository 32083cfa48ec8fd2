"""`coalmine import sam TEMPLATE`: the coalmine.yaml of what a team deploys with SAM today.

The document goes to stdout or ``-o FILE``; each note (what was assumed, left
out or could not be resolved offline) is one line on stderr and a comment at
the top of the document. Exit code 0 when something imported (notes or not),
2 with one line when nothing can: a file that cannot be read, is not YAML or
JSON, is not a SAM template, or has no function to import.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from coalmine._extras import require
from coalmine.core.errors import InvalidInput

__all__ = ["app", "sam"]

app = typer.Typer(
    help="Write coalmine config from what a team already deploys with.",
    no_args_is_help=True,
    add_completion=False,
)

_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
_ACCOUNT = re.compile(r"\d{12}")


def _parameters(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise InvalidInput(f"--parameter {item!r}: write NAME=VALUE, e.g. Stage=prod")
        out[name.strip()] = value
    return out


@app.command("sam")
def sam(
    template: Annotated[
        Path,
        typer.Argument(
            metavar="TEMPLATE",
            help="The SAM template, YAML or JSON (with Transform: AWS::Serverless-2016-10-31).",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Write the coalmine.yaml to FILE instead of stdout.",
            show_default=False,
        ),
    ] = None,
    app_name: Annotated[
        str | None,
        typer.Option(
            "--app",
            metavar="NAME",
            help="The app's name (default: --stack-name, else the template's Description,"
            " else the file's name).",
            show_default=False,
        ),
    ] = None,
    parameter: Annotated[
        list[str] | None,
        typer.Option(
            "--parameter",
            metavar="NAME=VALUE",
            help="A template parameter's value, over its Default (repeat for more).",
            show_default=False,
        ),
    ] = None,
    region: Annotated[
        str | None,
        typer.Option(
            metavar="REGION",
            help="AWS::Region in the template (default us-east-1, with a note when used).",
            show_default=False,
        ),
    ] = None,
    account: Annotated[
        str | None,
        typer.Option(
            metavar="ACCOUNT",
            help="AWS::AccountId in the template (default 123456789012, with a note when used).",
            show_default=False,
        ),
    ] = None,
    stack_name: Annotated[
        str | None,
        typer.Option(
            "--stack-name",
            metavar="STACK",
            help="AWS::StackName in the template (default: the app's name, with a note when used).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Import a SAM template's AutoPublishAlias functions and DeploymentPreference as one app.

    Each AWS::Serverless::Function with AutoPublishAlias becomes a function whose
    versions are its published Lambda versions; DeploymentPreference Type,
    Alarms and Hooks become the app's release strategy, CloudWatch alarms and
    Lambda hooks. Notes (what was assumed, left out, or cannot be resolved
    offline) go to stderr and to the top of the document. Nothing calls AWS.
    """
    require("yaml", "aws")
    from coalmine.integrations.sam import ImportOptions, import_template, read_template

    if region is not None and not _REGION.fullmatch(region):
        raise InvalidInput(f"--region {region!r}: give an AWS region such as eu-west-1")
    if account is not None and not _ACCOUNT.fullmatch(account):
        raise InvalidInput(f"--account {account!r}: give the 12 digits of an AWS account id")
    options = ImportOptions(
        app=app_name,
        parameters=_parameters(parameter or []),
        region=region,
        account=account,
        stack_name=stack_name,
    )
    result = import_template(read_template(template), options)
    document = result.document()
    if output is None:
        sys.stdout.write(document)
    else:
        try:
            output.write_text(document, encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"cannot write {output}: {exc.strerror or exc}") from None
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if output is not None:
        functions = len(result.config["functions"])
        print(
            f"wrote {output}: app {result.config['app']}, {functions} function(s),"
            f" {len(result.notes)} note(s)",
            file=sys.stderr,
        )
