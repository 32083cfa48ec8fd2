"""The typer application: registers each command group and owns error handling."""

from __future__ import annotations

import sys

import typer

from coalmine import __version__
from coalmine.cli import simulate
from coalmine.core.errors import InvalidInput

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
    except InvalidInput as exc:
        print(f"coalmine: error: {exc}", file=sys.stderr)
        return 2
    except typer.Abort:
        print("coalmine: aborted", file=sys.stderr)
        return 130
    except typer.Exit as exc:
        return int(exc.exit_code)
    return result if isinstance(result, int) else 0
