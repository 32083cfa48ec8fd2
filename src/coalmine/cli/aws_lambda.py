"""`coalmine lambda local`: serve Python handlers behind a local Lambda Invoke endpoint.

Like ``sam local start-lambda`` without Docker: boto3 (or the gateway) pointed
at it through ``AWS_ENDPOINT_URL_LAMBDA`` invokes versions and aliases as on
AWS. The command binds its socket first, then prints the ``export`` line on
stdout, so a script may read the line and connect at once.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from coalmine._extras import require
from coalmine.cli.output import err_console

__all__ = ["app", "local"]

app = typer.Typer(
    help="Try Lambda routing without an AWS account.", no_args_is_help=True, add_completion=False
)

DEFAULT_PORT = 3001
"""`coalmine lambda local`'s port (``sam local start-lambda``'s)"""


@app.command("local")
def local(
    file: Annotated[
        Path,
        typer.Option(
            "--file",
            "-f",
            metavar="FILE",
            help="Functions to serve: a functions YAML (see docs/gateway.md) or a coalmine.yaml.",
        ),
    ],
    host: Annotated[str, typer.Option(metavar="HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(min=0, max=65535, metavar="PORT", help="Port to listen on (0: any free one)."),
    ] = DEFAULT_PORT,
    app_dir: Annotated[
        str, typer.Option(metavar="DIR", help="Where handler modules are imported from.")
    ] = ".",
) -> None:
    """Serve the Lambda Invoke API on HOST:PORT, running each version's Python handler."""
    uvicorn = require("uvicorn", "gateway")
    from coalmine.integrations.lambda_local import LocalLambda

    endpoint = LocalLambda.from_file(file)
    sys.path.insert(0, str(Path(app_dir).resolve()))
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise typer.BadParameter(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(1024)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    names = ", ".join(
        f"{fn.name} ({', '.join([*fn.versions, *fn.aliases])})"
        for fn in endpoint.functions.values()
    )
    err_console.print(f"coalmine lambda local on http://{shown}:{bound}: {names}")
    print(f"export AWS_ENDPOINT_URL_LAMBDA=http://{shown}:{bound}", flush=True)
    from coalmine.gateway.server import PROTOCOL

    # the gateway's protocol: one write per answer, not ~40 ms an invoke (Nagle, delayed ACK)
    config = uvicorn.Config(endpoint, log_level="warning", lifespan="on", ws="none", http=PROTOCOL)
    uvicorn.Server(config).run(sockets=[sock])
