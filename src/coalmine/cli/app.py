"""The typer application: registers each command group and owns error handling."""

from __future__ import annotations

import sys

import typer

from coalmine import __version__
from coalmine._extras import MissingExtraError
from coalmine.cli import (
    apply,
    aws_lambda,
    consistency,
    demo,
    events,
    gateway,
    importer,
    release,
    report,
    serve,
    signing_keys,
    simulate,
    token,
)
from coalmine.cli.client import CliError
from coalmine.core.errors import CoalmineError, InvalidInput, NotFound

__all__ = ["app", "run"]

app = typer.Typer(
    name="coalmine",
    help="Canary releases of serverless functions that route users, not requests.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        print(f"coalmine {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_version, is_eager=True
    ),
) -> None:
    """Canary releases of serverless functions that route users, not requests."""


app.command(name="simulate")(simulate.command)
app.command(name="demo")(demo.command)
app.command(name="apply")(apply.command)
app.command(name="events")(events.command)
app.command(name="serve", epilog=serve.EPILOG)(serve.command)
app.command(name="gateway")(gateway.command)
app.command(name="consistency")(consistency.command)
app.command(name="report")(report.command)
app.command(name="signing-keys")(signing_keys.command)
app.add_typer(release.app, name="release")
app.add_typer(token.app, name="token")
app.add_typer(aws_lambda.app, name="lambda")
app.add_typer(importer.app, name="import")


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; return the process exit code.

    Usage errors and invalid input print one line, ``coalmine: error: ...``,
    and return 2, instead of click's several lines of usage text.
    """
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="coalmine", standalone_mode=False)
    except typer.TyperException as exc:
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            print(ctx.get_help())
            return 0
        code = int(getattr(exc, "exit_code", 1))
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        first = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
        hint = f" (try '{ctx.command_path} --help')" if ctx is not None and code == 2 else ""
        print(f"coalmine: error: {first}{hint}", file=sys.stderr)
        return code
    except CoalmineError as exc:
        code = 2 if isinstance(exc, InvalidInput | NotFound) else 1
        print(f"coalmine: error: {exc}", file=sys.stderr)
        return code
    except MissingExtraError as exc:
        print(f"coalmine: {exc}", file=sys.stderr)
        return 1
    except CliError as exc:
        print(f"coalmine: error: {exc}", file=sys.stderr)
        return exc.code
    except typer.Abort:
        print("coalmine: aborted", file=sys.stderr)
        return 130
    except typer.Exit as exc:
        return int(exc.exit_code)
    return result if isinstance(result, int) else 0
