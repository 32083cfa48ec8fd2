"""The `coalmine` command line (typer + rich).

`main` is the console-script entry point. It checks for the ``cli`` extra
before importing typer, and turns usage errors and invalid input into one
line on stderr with exit code 2 (0 ok, 1 operation failed, 2 bad usage/input).
"""

from __future__ import annotations

import sys

from coalmine._extras import MissingExtraError, require

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    try:
        require("typer", "cli")
        require("rich", "cli")
    except MissingExtraError as exc:
        print(f"coalmine: {exc}", file=sys.stderr)
        return 1
    from coalmine.cli.app import run

    return run(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
