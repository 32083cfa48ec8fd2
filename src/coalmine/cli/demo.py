"""`coalmine demo`: the article's app released three ways on the whole product, in one process.

Starts the stack (`coalmine.cli.demo_stack`), plays the three scenes
(`coalmine.cli.demo_scenes`) with progress as they run, prints a summary
table (or, with ``--json``, one JSON object), and then, when interactive or
with ``--stay``, keeps the control plane, its dashboard and the gateway up
until Ctrl-C. Everything it started is stopped and its temporary directory
removed on every way out: the end, Ctrl-C, SIGTERM, a failure.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from coalmine._extras import require

__all__ = ["command"]

_VERDICT = {"pass": "[green]✓[/]", "fail": "[red]✗[/]", "inconclusive": "[yellow]?[/]"}


class _Interrupted(Exception):
    """SIGTERM, handled as Ctrl-C is."""


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises in the main thread as Ctrl-C does, so the same clean-up runs; and Ctrl-C
    (SIGINT) interrupts even when the process started with it ignored (a shell starts
    background jobs so)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted(signal.Signals(signum).name)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, handler)
    before_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)
        signal.signal(signal.SIGINT, before_int)


class _Display:
    """The progress of a scene: event lines as they come, and a status line under them."""

    def __init__(self, console: Console, quiet: bool) -> None:
        self.console = console
        self.quiet = quiet
        self.live: Live | None = None
        self._verdicts = 0

    def scene(self, number: int, title: str) -> None:
        if self.quiet:
            return
        self.stop()
        self.console.rule(f"[bold]Scene {number}[/] · {title}")
        if self.console.is_terminal:
            self.live = Live(Text(""), console=self.console, refresh_per_second=4, transient=True)
            self.live.start()

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def progress(self, p: Any) -> None:
        if self.quiet or self.live is None:
            return
        verdicts = " ".join(_VERDICT.get(v, v) for v in p.verdicts) or "-"
        self.live.update(
            Text.from_markup(
                f"  [dim]{p.phase}[/] · exposure [bold]{p.exposure / 100:g}%[/] ·"
                f" {p.orders:,} orders · [bold]{p.users_met_canary}[/] of {p.users_active}"
                f" users met the canary · {p.failures} failed orders · judge {verdicts}"
            )
        )

    def event(self, scene: int, text: str) -> None:
        if self.quiet:
            return
        style = ""
        if text.startswith("judge: fail") or text.startswith("rolling_back"):
            style = "red"
        elif text.startswith("judge: pass") or text.startswith("promoted"):
            style = "green"
        elif text.startswith("judge: inconclusive"):
            style = "yellow"
        if text.startswith("judge:"):
            self._verdicts += 1
        self.console.print(
            Text(f"  {time.strftime('%H:%M:%S')} {text}", style=style),
            overflow="ellipsis",
            no_wrap=True,
        )


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _summary(console: Console, r1: Any, r2: Any, r3: Any) -> None:
    table = Table(title="What the three releases did", title_justify="left")
    table.add_column("")
    table.add_column("1 · weighted alias\n(10% of requests)", justify="right")
    table.add_column("2 · coalmine\n(10% of users, judged)", justify="right")
    table.add_column("3 · coalmine, v3\n(slower tail)", justify="right")
    table.add_row(
        "users who met the canary",
        f"{_pct(r1.exposed_user_fraction)} ({r1.users_met_canary}/{r1.users_active})",
        f"{_pct(r2.exposed_user_fraction)} ({r2.users_met_canary_at_10}/{r2.users_active_at_10})"
        " at 10%",
        "",
    )
    table.add_row(
        "orders whose chain mixed v1 and v2",
        f"{r1.mixed_chains:,} of {r1.orders:,}",
        f"{r2.mixed_chains:,} of {r2.orders:,}",
        "",
    )
    table.add_row(
        "... and failed",
        f"[red]{r1.mixed_chain_failures:,}[/]",
        f"[green]{r2.mixed_chain_failures:,}[/]",
        "",
    )
    table.add_row(
        "judge verdicts",
        "(none: an alias has no judge)",
        _verdict_counts(r2.verdicts),
        _verdict_counts(r3.verdicts),
    )
    p99, p50 = r3.p99_ms, r3.p50_ms
    table.add_row(
        "p50 / p99 of place-order (ms)",
        "",
        "",
        f"all {p50['all_traffic']:g} / {p99['all_traffic']:g}\n"
        f"stable {p50['stable']:g} / {p99['stable']:g}\n"
        f"canary {p50['canary']:g} / {p99['canary']:g}",
    )
    outcome3 = r3.outcome.replace("_", " ")
    if r3.seconds_to_rollback is not None:
        outcome3 += f" after {r3.seconds_to_rollback:g}s"
    table.add_row(
        "outcome",
        "rolled back by hand",
        r2.outcome.replace("_", " "),
        f"[{'green' if r3.outcome == 'rolled_back' else 'red'}]{outcome3}[/]",
    )
    console.print(table)
    if r1.failure_example:
        console.print(f"[dim]scene 1, a failed order:[/] {r1.failure_example}")
    console.print(f"[dim]scene 3, the judge:[/] {r3.reason}")
    stable = p99["stable"] or float("nan")
    console.print(
        f"[dim]scene 3, the p99 an alarm on all traffic sees:[/] {p99['all_traffic']:g} ms,"
        f" {p99['all_traffic'] / stable - 1:+.0%} over stable's {p99['stable']:g} ms in the same"
        f" seconds; the canary's own: {p99['canary']:g} ms, {p99['canary'] / stable - 1:+.0%}"
    )


def _verdict_counts(verdicts: list[str]) -> str:
    counts = {v: verdicts.count(v) for v in ("pass", "inconclusive", "fail") if v in verdicts}
    return ", ".join(f"{n} {v}" for v, n in counts.items()) or "-"


def _result(r1: Any, r2: Any, r3: Any, stack: Any, seconds: float) -> dict[str, Any]:
    return {
        "request_mode": {
            "exposed_user_fraction": r1.exposed_user_fraction,
            "mixed_chain_failures": r1.mixed_chain_failures,
            "mixed_chains": r1.mixed_chains,
            "orders": r1.orders,
            "users_active": r1.users_active,
            "release": r1.release,
        },
        "user_mode": {
            "exposed_user_fraction": r2.exposed_user_fraction,
            "mixed_chain_failures": r2.mixed_chain_failures,
            "outcome": r2.outcome,
            "mixed_chains": r2.mixed_chains,
            "orders": r2.orders,
            "users_active": r2.users_active_at_10,
            "verdicts": r2.verdicts,
            "release": r2.release,
        },
        "slow_canary": {
            "outcome": r3.outcome,
            "seconds_to_rollback": r3.seconds_to_rollback,
            "reason": r3.reason,
            "p99_ms": r3.p99_ms,
            "p50_ms": r3.p50_ms,
            "verdicts": r3.verdicts,
            "release": r3.release,
        },
        "functions": "lambda" if stack.options.lambda_mode else "local",
        "store": stack.database_shown,
        "stream": stack.stream_shown,
        "users": stack.options.users,
        "seconds": round(seconds, 1),
    }


def _stay(console: Console, stack: Any, r1: Any, r2: Any, r3: Any) -> None:
    stack.stop_crowd()
    url, gw = stack.plane_url, stack.gateway_url
    console.rule("[bold]Still running[/] (Ctrl-C to stop and clean up)")
    console.print(f"control plane  {url}   dashboard {url}/ui")
    console.print(f"gateway        {gw}")
    if stack.lambda_url:
        console.print(f"local Lambda   {stack.lambda_url}")
    console.print(f"admin token    {stack.admin_token}")
    console.print("\nTry, in another terminal:")
    for line in (
        f"export COALMINE_URL={url} COALMINE_TOKEN={stack.admin_token}",
        f"coalmine release status {r3.release}",
        f"coalmine events --release {r2.release}",
        f"curl -s -X POST {gw}/place-order/ -H 'x-user-id: user-007'"
        ' -d \'{"id": "o-1", "items": ["pizza"]}\' -i',
    ):
        console.print(f"  {line}", highlight=False, soft_wrap=True)
    console.print(
        f"\nthe releases' pages: {url}/ui (scene 1 {r1.release}, scene 2 {r2.release},"
        f" scene 3 {r3.release})"
    )
    while True:
        time.sleep(3600)


def command(
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print one JSON object with every scene's numbers and exit."),
    ] = False,
    stay: Annotated[
        bool | None,
        typer.Option(
            "--stay/--no-stay",
            help="After the summary, keep the control plane, dashboard and gateway up until"
            " Ctrl-C (default: only when stdin is a terminal, so `make demo` in CI ends).",
            show_default=False,
        ),
    ] = None,
    use_lambda: Annotated[
        bool,
        typer.Option(
            "--lambda",
            help="Run the functions behind a local Lambda Invoke endpoint (the gateway calls"
            " lambda:NAME:VERSION through boto3's AWS_ENDPOINT_URL_LAMBDA), not in the gateway.",
        ),
    ] = False,
    users: Annotated[
        int, typer.Option(min=50, max=10_000, metavar="N", help="Simulated users.")
    ] = 300,
    threads: Annotated[
        int,
        typer.Option(
            min=1, max=64, metavar="N", help="Users ordering at the same time (client threads)."
        ),
    ] = 16,
    rate: Annotated[
        float,
        typer.Option(min=20, max=2000, metavar="N", help="Orders a second, spread over the users."),
    ] = 120,
    seed: Annotated[int, typer.Option(metavar="N", help="Seed of the users' choices.")] = 1,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            metavar="URL",
            help="Run on this store (postgresql+psycopg://...) instead of a temporary SQLite"
            " file; the app is then named food-ordering-XXXXXX, so runs never meet, and the"
            " demo's tokens are revoked at its end (COALMINE_DATABASE_URL is not read: a"
            " demo writes to a store only when told on its command line).",
            show_default=False,
        ),
    ] = None,
    nats_url: Annotated[
        str | None,
        typer.Option(
            "--nats-url",
            envvar="COALMINE_NATS_URL",
            metavar="URL",
            help="Carry order_placed on NATS JetStream (nats://127.0.0.1:4222) instead of the"
            " in-memory stream.",
            show_default=False,
        ),
    ] = None,
    app_dir: Annotated[
        str | None,
        typer.Option(
            "--app-dir",
            metavar="DIR",
            help="The directory holding examples/food_ordering (default: the working"
            " directory, else the source tree coalmine was installed from).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Release the article's food-ordering app three ways on the whole product, with a judge.

    Starts the control plane (temporary SQLite), the rollout controller, the
    gateway with the example's functions, the in-memory stream and a few
    hundred simulated users, all on 127.0.0.1, then plays: (1) v2 as a
    weighted alias does it (10% of requests), (2) v2 by coalmine (10% of
    users, the judge every second, promoted), (3) a v3 slower at the tail,
    rolled back by the judge. Takes about a minute. Nothing is left behind:
    the temporary directory is removed, also on Ctrl-C and on failure.
    """
    require("fastapi", "server")
    require("uvicorn", "server")
    if use_lambda:
        require("boto3", "aws")
    if nats_url:
        require("nats", "nats")
    from coalmine.cli import demo_scenes as scenes
    from coalmine.cli.demo_stack import Options, Stack

    console = Console(stderr=as_json) if as_json else Console()
    display = _Display(console, quiet=as_json)
    staying = (not as_json) and (stay if stay is not None else sys.stdin.isatty())
    options = Options(
        users=users,
        threads=threads,
        rate=rate,
        seed=seed,
        lambda_mode=use_lambda,
        database_url=database_url,
        nats_url=nats_url,
        app_dir=app_dir,
    )
    t0 = time.monotonic()
    # the demo says what happens itself; the controller's log lines would say it twice
    logging.getLogger("coalmine").setLevel(logging.ERROR)
    try:
        with _terminate_as_interrupt():
            try:
                stack = Stack(options)
                if not as_json:
                    console.print(
                        f"starting the control plane, gateway and {users} users"
                        f" ({'Lambda' if use_lambda else 'local'} functions)..."
                    )
                with stack:
                    if not as_json:
                        console.print(
                            f"control plane {stack.plane_url} (store {stack.database_shown}),"
                            f" gateway {stack.gateway_url}, stream {stack.stream_shown}"
                        )
                    display.scene(1, "v2 released as a weighted alias does it: 10% of requests")
                    r1 = scenes.request_mode(stack, display)
                    display.scene(2, "v2 released by coalmine: 10% of users, then 50%, judged")
                    r2 = scenes.user_mode(stack, display, r1.ended_at)
                    display.scene(3, "v3, slower at the tail, released by coalmine")
                    r3 = scenes.slow_canary(stack, display)
                    display.stop()
                    seconds = time.monotonic() - t0
                    if as_json:
                        sys.stdout.write(json.dumps(_result(r1, r2, r3, stack, seconds)) + "\n")
                        sys.stdout.flush()
                        return
                    _summary(console, r1, r2, r3)
                    console.print(f"[dim]{seconds:.0f}s in all[/]")
                    if staying:
                        try:
                            _stay(console, stack, r1, r2, r3)
                        except (KeyboardInterrupt, _Interrupted):
                            console.print("stopping the demo...")
                            return  # the way out of staying up, not a failure
            finally:
                display.stop()
    except (KeyboardInterrupt, _Interrupted):
        print("coalmine demo: interrupted; everything it started is stopped", file=sys.stderr)
        raise typer.Exit(130) from None
