"""`coalmine release ...`: start, inspect, watch and operate releases."""

from __future__ import annotations

import re
import threading
import time
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from coalmine.cli.client import ApiClient, CliError
from coalmine.cli.options import JsonOpt, TokenOpt, UrlOpt
from coalmine.cli.output import ago, console, pct, print_json

__all__ = ["app", "render_status"]

app = typer.Typer(help="Start, inspect, watch and operate releases.", no_args_is_help=True)

TERMINAL = {"promoted": 0, "rolled_back": 1, "failed": 1}
PHASE_STYLE = {
    "pending": "yellow",
    "running": "cyan",
    "paused": "magenta",
    "promoting": "green",
    "promoted": "bold green",
    "rolling_back": "red",
    "rolled_back": "bold red",
    "failed": "bold red",
}
_ASSIGN = re.compile(r"([a-z0-9][a-z0-9_-]*)=(\S+)")


def _parse_sets(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        m = _ASSIGN.fullmatch(value)
        if m is None:
            raise CliError(f"--set takes FUNCTION=VERSION, got {value!r}", 2)
        out[m.group(1)] = m.group(2)
    return out


def resolve(client: ApiClient, ref: str) -> dict[str, Any]:
    """A release by id, or an app's active (else latest) release by app name."""
    try:
        release: dict[str, Any] = client.get(f"/v1/releases/{ref}")
        return release
    except CliError as exc:
        if exc.code != 2:
            raise
    try:
        app_info = client.get(f"/v1/apps/{ref}")
    except CliError:
        raise CliError(f"no release or app named {ref!r}", 2) from None
    if app_info.get("active_release"):
        active: dict[str, Any] = client.get(f"/v1/releases/{app_info['active_release']}")
        return active
    releases = client.get(f"/v1/apps/{ref}/releases", limit=1)
    if not releases:
        raise CliError(f"app {ref!r} has no releases yet", 2)
    latest: dict[str, Any] = releases[0]
    return latest


@app.command("start")
def start(
    app_name: Annotated[
        str, typer.Argument(metavar="APP", help="The app to release.", show_default=False)
    ],
    sets: Annotated[
        list[str],
        typer.Option(
            "--set",
            metavar="FUNCTION=VERSION",
            help="Once per function that changes. VERSION 'latest-published' is the newest"
            " published version of the function's Lambda function (registered if it is not"
            " yet): what a pipeline runs after `sam deploy` published one.",
        ),
    ],
    strategy: Annotated[
        str | None,
        typer.Option(
            metavar="STRATEGY", help="A CodeDeploy preset or steps like '10%:5m, 50%:10m, 100%'."
        ),
    ] = None,
    route_mode: Annotated[
        str | None, typer.Option("--route-mode", metavar="MODE", help="user (default) or request.")
    ] = None,
    always_canary: Annotated[
        list[str] | None,
        typer.Option("--always-canary", metavar="USER", help="A user key always in canary."),
    ] = None,
    never_canary: Annotated[
        list[str] | None,
        typer.Option("--never-canary", metavar="USER", help="A user key never in canary."),
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a release of APP that moves the given functions to candidate versions."""
    if route_mode is not None and route_mode not in ("user", "request"):
        raise CliError(f"--route-mode must be user or request, got {route_mode!r}", 2)
    body: dict[str, Any] = {
        "candidate": _parse_sets(sets),
        "targeting": {
            "always_canary": list(always_canary or []),
            "never_canary": list(never_canary or []),
        },
    }
    if strategy is not None:
        body["strategy"] = strategy
    if route_mode is not None:
        body["route_mode"] = route_mode
    with ApiClient(url, token) as client:
        release = client.post(f"/v1/apps/{app_name}/releases", body)
    if as_json:
        print_json(release)
        return
    console.print(f"started release [bold]{release['id']}[/] ({release['strategy']})")
    console.print(render_status(release, []))


@app.command("status")
def status(
    ref: Annotated[str, typer.Argument(metavar="RELEASE|APP")],
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Follow live until the release ends.")
    ] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a release (by id, or an app's active or latest release)."""
    with ApiClient(url, token) as client:
        release = resolve(client, ref)
        if watch:
            code = _watch(client, release)
            raise typer.Exit(code)
        events = release_events(client, release["id"])
    if as_json:
        print_json({**release, "events": events})
        return
    console.print(render_status(release, events))


def _operate(
    command: str, ref: str, reason: str, url: str | None, token: str | None, as_json: bool
) -> None:
    with ApiClient(url, token) as client:
        release = resolve(client, ref)
        out = client.post(f"/v1/releases/{release['id']}/{command}", {"reason": reason})
    if as_json:
        print_json(out)
        return
    style = PHASE_STYLE.get(out["phase"], "")
    console.print(
        f"release [bold]{out['id']}[/]: [{style}]{out['phase']}[/] at {pct(out['exposure'])}"
    )


ReasonOpt = Annotated[
    str, typer.Option("--reason", "-r", metavar="TEXT", help="Why; recorded in the events.")
]
RefArg = Annotated[str, typer.Argument(metavar="RELEASE|APP")]


_OPERATIONS = {
    "promote": "Skip the remaining steps: send everyone to the candidate versions.",
    "rollback": "Roll back at once: everyone runs the baseline versions.",
    "pause": "Hold the current exposure until resumed.",
    "resume": "Continue a paused release with the hold it had left.",
}


def _register_operation(command: str, doc: str) -> None:
    def operation(
        ref: RefArg,
        reason: ReasonOpt = "",
        url: UrlOpt = None,
        token: TokenOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        _operate(command, ref, reason, url, token, as_json)

    operation.__doc__ = doc
    operation.__name__ = command
    app.command(command)(operation)


for _command, _doc in _OPERATIONS.items():
    _register_operation(_command, _doc)


@app.command("list")
def list_releases(
    app_name: Annotated[
        str | None, typer.Option("--app", metavar="APP", help="Only this app's releases.")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=1000, metavar="N", help="At most this many.")
    ] = 20,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List releases, newest first."""
    with ApiClient(url, token) as client:
        if app_name is not None:
            releases = client.get(f"/v1/apps/{app_name}/releases", limit=limit)
        else:
            releases = []
            for a in client.get("/v1/apps"):
                releases += client.get(f"/v1/apps/{a['name']}/releases", limit=limit)
            releases.sort(key=lambda r: r["created_at"], reverse=True)
            releases = releases[:limit]
    if as_json:
        print_json(releases)
        return
    table = Table("id", "app", "phase", "exposure", "strategy", "changed", "created")
    for r in releases:
        style = PHASE_STYLE.get(r["phase"], "")
        table.add_row(
            r["id"],
            r["app"],
            Text(r["phase"], style=style),
            pct(r["exposure"]),
            r["strategy"],
            ", ".join(f"{fn} {r['baseline'][fn]}->{r['candidate'][fn]}" for fn in r["changed"]),
            ago(r["created_at"]),
        )
    console.print(table)


def release_events(client: ApiClient, release_id: str) -> list[dict[str, Any]]:
    """Every event of a release, oldest first (paged: a long release has thousands)."""
    return client.get_all(f"/v1/releases/{release_id}/events")


def render_status(
    release: dict[str, Any], events: list[dict[str, Any]], now: float | None = None
) -> Group:
    """A release as a person reads it: phase, exposure over the plan, verdict, events."""
    now = time.time() if now is None else now
    phase = release["phase"]
    head = Text.assemble(
        (release["id"], "bold"),
        "  ",
        (phase, PHASE_STYLE.get(phase, "")),
        f"  {release['route_mode']} routing  strategy {release['strategy']}",
    )
    changed = ", ".join(
        f"{fn} {release['baseline'][fn]} -> {release['candidate'][fn]}" for fn in release["changed"]
    )
    steps = release["steps"]
    step_no = release["step"] + 1
    plan = "  ".join(
        (f"[{pct(s['exposure'])}]" if i == release["step"] else pct(s["exposure"]))
        for i, s in enumerate(steps)
    )
    bar = ProgressBar(total=10_000, completed=release["exposure"], width=40)
    line = Table.grid(padding=(0, 1))
    line.add_row(
        bar,
        Text(f"{pct(release['exposure'])} exposed"),
        Text(f"step {max(step_no, 0)}/{len(steps)}"),
    )
    nxt = release.get("next_action_at")
    timing = ""
    if nxt is not None and phase in ("pending", "running", "promoting"):
        timing = "next action due now" if nxt <= now else f"next action {ago(nxt, now)}"
    if phase == "paused":
        timing = "paused: " + (release.get("reason") or "by an operator")
    verdict = _verdict(events)
    parts: list[Any] = [head, Text(f"changes: {changed}"), Text(f"plan: {plan}"), line]
    if timing:
        parts.append(Text(timing))
    parts.append(Text(f"analysis: {verdict}"))
    evidence = _evidence(events)
    if evidence is not None:
        parts.append(evidence)
    if release.get("reason") and phase in ("rolling_back", "rolled_back", "failed"):
        parts.append(Text(f"reason: {release['reason']}", style="red"))
    if events:
        table = Table("when", "actor", "event", "message", box=None, pad_edge=False)
        for ev in events[-6:]:
            table.add_row(ago(ev["at"], now), ev["actor"], ev["kind"], ev["message"])
        parts.append(table)
    return Group(*parts)


def _evidence(events: list[dict[str, Any]]) -> Table | None:
    """The evidence each judged metric has against what it needs, from the latest analysis."""
    for ev in reversed(events):
        if ev["kind"] == "analysis":
            evidence = (ev.get("data") or {}).get("evidence")
            break
    else:
        return None
    if not isinstance(evidence, dict) or not evidence.get("metrics"):
        return None
    ready = "enough to advance" if evidence.get("open") else "a step waits for every metric"
    table = Table(
        f"evidence ({ready})", "gathered", "needed", box=None, pad_edge=False, show_edge=False
    )
    for m in evidence["metrics"]:
        needed = m.get("needed")
        unit = "canary requests" if m.get("metric") == "error_rate" else "canary latencies"
        enough = needed is not None and m.get("evidence", 0) >= needed
        table.add_row(
            f"{m.get('function')} {m.get('metric')}",
            f"{m.get('evidence', 0):,}",
            Text(
                f"{needed:,} {unit}" if needed is not None else "unknown yet",
                style="green" if enough else "yellow",
            ),
        )
    return table


def _verdict(events: list[dict[str, Any]]) -> str:
    for ev in reversed(events):
        if ev["kind"] == "analysis":
            return str(ev["message"])
    return "no analysis yet"


def _watch(client: ApiClient, release: dict[str, Any]) -> int:
    """Follow a release live; the routing stream wakes the display on every change."""
    changed = threading.Event()
    stop = threading.Event()

    def follow() -> None:
        try:
            for _event, _data in client.stream_events(f"/v1/apps/{release['app']}/routing/stream"):
                changed.set()
                if stop.is_set():
                    return
        except CliError:
            changed.set()

    threading.Thread(target=follow, daemon=True).start()
    rid = release["id"]
    with Live(render_status(release, []), console=console, refresh_per_second=4) as live:
        while True:
            release = client.get(f"/v1/releases/{rid}")
            events = release_events(client, rid)
            live.update(render_status(release, events))
            if release["phase"] in TERMINAL:
                stop.set()
                return TERMINAL[release["phase"]]
            # wake on a change at once; otherwise refresh the countdown each second
            changed.wait(timeout=1.0)
            changed.clear()
