"""`coalmine simulate`: the blast-radius simulator, shown as a table or one JSON object."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from coalmine.simulation import ModeResult, SimulationParams, SimulationResult, simulate

__all__ = ["command", "render"]


def command(
    users: int = typer.Option(10_000, "--users", metavar="N", help="Number of distinct users."),
    requests: int = typer.Option(
        200_000,
        "--requests",
        metavar="N",
        help="Total requests, spread over the users (see --skew).",
    ),
    percent: float = typer.Option(
        10.0, "--percent", metavar="PERCENT", help="Canary exposure in percent."
    ),
    chain: int = typer.Option(
        3,
        "--chain",
        metavar="K",
        help="Functions each request passes through (HTTP hops or stream hops).",
    ),
    seed: int = typer.Option(
        1, "--seed", metavar="N", help="Random seed; the same seed gives the same numbers."
    ),
    skew: float = typer.Option(
        0.0,
        "--skew",
        metavar="S",
        help="Zipf exponent of requests per user (0 = uniform; 1.1 = a few heavy users).",
    ),
    trials: int = typer.Option(
        1,
        "--trials",
        metavar="N",
        help="Repeat with fresh users and salt; counts are pooled over trials.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Route users through a chain of functions in both route modes and count the damage.

    For each mode: the share of active users who met the canary, the share of
    requests that reached it, and the share of requests whose chain mixed
    stable and canary versions.
    """
    params = SimulationParams(
        users=users,
        requests=requests,
        percent=percent,
        chain=chain,
        seed=seed,
        skew=skew,
        trials=trials,
    )
    result = simulate(params)
    if as_json:
        print(json.dumps(result.to_dict(), sort_keys=False))
        return
    render(result, Console())


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def render(result: SimulationResult, console: Console) -> None:
    p = result.params
    per_user = p.requests / p.users
    title = (
        f"{p.users:,} users, {p.requests:,} requests (~{per_user:.1f} per user), "
        f"{p.chain}-function chain, {p.percent:g}% canary"
        + (f", {p.trials:,} trials" if p.trials > 1 else "")
    )
    table = Table(title=title, title_justify="left")
    table.add_column("")
    table.add_column("route by user", justify="right")
    table.add_column("route by request\n(weighted alias)", justify="right")
    u, r = result.user, result.request
    rows: list[tuple[str, str, str]] = [
        ("users who met the canary", _pct(u.exposed_user_fraction), _pct(r.exposed_user_fraction)),
        (
            "requests that reached the canary",
            _pct(u.canary_request_fraction),
            _pct(r.canary_request_fraction),
        ),
        (
            "requests whose chain mixed versions",
            _pct(u.mixed_chain_fraction),
            _pct(r.mixed_chain_fraction),
        ),
    ]
    if p.trials > 1:
        rows.append(
            (
                "users who met the canary, worst trial",
                _pct(u.max_exposed_user_fraction),
                _pct(r.max_exposed_user_fraction),
            )
        )
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(_verdict(p, u, r))


def _verdict(p: SimulationParams, u: ModeResult, r: ModeResult) -> str:
    return (
        f"A {p.percent:g}% canary routed by request reached {_pct(r.exposed_user_fraction)} of"
        f" active users and mixed versions in {_pct(r.mixed_chain_fraction)} of chains;"
        f" routed by user it reached {_pct(u.exposed_user_fraction)} and mixed"
        f" {_pct(u.mixed_chain_fraction)}."
    )
