"""`coalmine release ...`: start, inspect, watch and operate releases."""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from coalmine.cli.client import ApiClient, CliError
from coalmine.cli.options import JsonOpt, TokenOpt, UrlOpt
from coalmine.cli.output import ago, console, pct, print_json, when
from coalmine.cli.verdict import render_run, verdict_rows, verdict_table
from coalmine.cli.watch import watch

__all__ = ["app", "latest_run", "render_status"]

app = typer.Typer(help="Start, inspect, watch and operate releases.", no_args_is_help=True)

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
    no_analysis: Annotated[
        bool,
        typer.Option(
            "--no-analysis",
            help="Turn the judge off for this release (analysis {enabled: false}): the steps"
            " go by the strategy alone. By default the release is judged with the app's"
            " analysis settings, else the defaults (analysis.md).",
        ),
    ] = False,
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
    if no_analysis:
        body["analysis"] = {"enabled": False}
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
    follow: Annotated[
        bool,
        typer.Option(
            "--watch",
            "-w",
            help="Follow until the release is promoted (exit 0), rolled back or failed"
            " (exit 1) or paused (exit 3: it waits for an operator). On a terminal the view"
            " updates in place; otherwise (a CI log) one plain line per change.",
        ),
    ] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a release (by id, or an app's active or latest release): its plan, the judge's
    verdict per function and metric, the evidence a step waits for, the latest events.

    Exit codes with --watch: 0 promoted, 1 rolled back or failed (or the command failed),
    2 bad input, 3 paused.
    """
    with ApiClient(url, token) as client:
        release = resolve(client, ref)
        if follow:
            code = watch(client, release, lambda r, ev: _status(client, r, ev))
            raise typer.Exit(code)
        events = release_events(client, release["id"])
        run = latest_run(client, release["id"]) if _judged(events) else None
    if as_json:
        print_json({**release, "events": events})
        return
    console.print(render_status(release, events, run=run))


def _status(client: ApiClient, release: dict[str, Any], events: list[dict[str, Any]]) -> Group:
    run = latest_run(client, release["id"]) if _judged(events) else None
    return render_status(release, events, run=run)


@app.command("analysis")
def analysis(
    ref: Annotated[str, typer.Argument(metavar="RELEASE|APP")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the judge's latest verdict on a release: a row per function and metric (canary,
    stable, change, limit, p-value, pass/fail), the verdict's sentence, the evidence a step
    waits for. --json prints {"release", "phase", "run" (as GET
    /v1/releases/ID/analysis/latest returns it, null before the first), "rows"}."""
    with ApiClient(url, token) as client:
        release = resolve(client, ref)
        run = latest_run(client, release["id"])
    if as_json:
        print_json(
            {
                "release": release["id"],
                "phase": release["phase"],
                "run": run,
                "rows": verdict_rows(run) if run is not None else [],
            }
        )
        return
    if run is None:
        off = not _analysis_on(release.get("analysis"))
        console.print(
            f"release [bold]{release['id']}[/]: "
            + ("analysis is off (analysis: {enabled: false})" if off else "no analysis run yet")
        )
        return
    console.print(Text.assemble((release["id"], "bold"), f"  {release['phase']}"))
    console.print(render_run(run))


def latest_run(client: ApiClient, release_id: str) -> dict[str, Any] | None:
    """The release's latest analysis run, None before the first."""
    try:
        run: dict[str, Any] = client.get(f"/v1/releases/{release_id}/analysis/latest")
    except CliError as exc:
        if exc.code != 2:
            raise
        return None
    return run


def _judged(events: list[dict[str, Any]]) -> bool:
    return any(ev["kind"] == "analysis" for ev in events)


def _analysis_on(spec: object) -> bool:
    return isinstance(spec, dict) and bool(spec) and spec.get("enabled", True) is not False


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
            when(r["created_at"]),
        )
    console.print(table)


def release_events(client: ApiClient, release_id: str) -> list[dict[str, Any]]:
    """Every event of a release, oldest first (paged: a long release has thousands)."""
    return client.get_all(f"/v1/releases/{release_id}/events")


def render_status(
    release: dict[str, Any],
    events: list[dict[str, Any]],
    now: float | None = None,
    *,
    run: dict[str, Any] | None = None,
) -> Group:
    """A release as a person reads it: phase, exposure over the plan, the verdict (a table
    per function and metric from ``run``, the latest analysis run, and its sentence once),
    the evidence, the latest events (times in ISO 8601, UTC)."""
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
        timing = (
            "next action due now" if nxt <= now else f"next action {ago(nxt, now)} ({when(nxt)})"
        )
    if phase == "paused":
        timing = "paused: " + (release.get("reason") or "by an operator")
    verdict = _verdict(events)
    parts: list[Any] = [head, Text(f"changes: {changed}"), Text(f"plan: {plan}"), line]
    if timing:
        parts.append(Text(timing))
    if run is not None and verdict_rows(run):
        parts.append(verdict_table(run))
    parts.append(Text(f"analysis: {verdict}"))
    evidence = _evidence(events)
    if evidence is not None:
        parts.append(evidence)
    if release.get("reason") and phase in ("rolling_back", "rolled_back", "failed"):
        parts.append(Text(f"reason: {release['reason']}", style="red"))
    if events:
        table = Table("when (UTC)", "actor", "event", "message", box=None, pad_edge=False)
        latest = _latest_analysis(events)
        for ev in events[-6:]:
            table.add_row(when(ev["at"]), ev["actor"], ev["kind"], _message(ev, latest))
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


def _latest_analysis(events: list[dict[str, Any]]) -> int | None:
    for ev in reversed(events):
        if ev["kind"] == "analysis":
            return int(ev["id"])
    return None


def _message(ev: dict[str, Any], latest: int | None) -> str:
    """An event's message; an analysis event's in short (its sentence is the verdict shown
    above, or an older one)."""
    if ev["kind"] != "analysis":
        return str(ev["message"])
    data = ev.get("data") or {}
    short = f"{data.get('outcome', '?')}, {data.get('action', '?')}"
    return f"{short} (the verdict above)" if ev["id"] == latest else short


def _verdict(events: list[dict[str, Any]]) -> str:
    for ev in reversed(events):
        if ev["kind"] == "analysis":
            return str(ev["message"])
    return "no analysis yet"
