"""`coalmine release status --watch`: follow a release until it ends or pauses, and say how
it ended in the exit status.

On a terminal the status is redrawn in place (rich's live view); otherwise (a CI
log, a pipe) each change is one plain line, no progress bar and no ANSI:
``2026-12-05T21:30:00Z shop-7 running 10% step 1/3: step (controller) ...``. An
analysis event makes a line only when its outcome, action or evidence gate differs
from the last one's (every interval brings one). The routing stream wakes the loop
on every change; otherwise it polls each second.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

import httpx
from rich.console import RenderableType
from rich.live import Live

from coalmine.cli.client import ApiClient, CliError
from coalmine.cli.output import console, pct, when

__all__ = ["EXIT", "PAUSED", "plain_line", "watch"]

PAUSED = 3
"""the exit status of a watch that ended because the release paused"""
EXIT = {"promoted": 0, "rolled_back": 1, "failed": 1, "paused": PAUSED}
"""the phases a watch ends on, and its exit status for each"""

Render = Callable[[dict[str, Any], list[dict[str, Any]]], RenderableType]


def plain_line(release: dict[str, Any], ev: dict[str, Any]) -> str:
    """One event of ``release`` as a plain log line."""
    phase = ev.get("phase") or release["phase"]
    exposure = ev.get("exposure") if ev.get("exposure") is not None else release["exposure"]
    message = " ".join(str(ev["message"]).split())
    return (
        f"{when(ev['at'])} {release['id']} {phase} {pct(exposure)}:"
        f" {ev['kind']} ({ev['actor']}) {message}"
    )


def _verdict_key(ev: dict[str, Any]) -> tuple[Any, ...]:
    data = ev.get("data") or {}
    evidence = data.get("evidence") or {}
    return (data.get("outcome"), data.get("action"), evidence.get("open"))


def watch(
    client: ApiClient,
    release: dict[str, Any],
    render: Render,
    *,
    out: TextIO | None = None,
    plain: bool | None = None,
    wake_after: float = 1.0,
) -> int:
    """Follow ``release`` until its phase is one of `EXIT`'s; that phase's exit status.
    ``plain`` (default: whether stdout is not a terminal) prints lines to ``out``."""
    changed = threading.Event()
    stop = threading.Event()
    # its own connection, closed when the watch ends: the stream's read never blocks a return
    stream = ApiClient(client.url, client.token)

    def follow() -> None:
        try:
            for _event, _data in stream.stream_events(f"/v1/apps/{release['app']}/routing/stream"):
                changed.set()
                if stop.is_set():
                    return
        except (CliError, httpx.HTTPError, RuntimeError):
            changed.set()  # polling goes on each second; closed at the end of the watch

    threading.Thread(target=follow, daemon=True).start()
    rid = release["id"]
    plain = not console.is_terminal if plain is None else plain
    try:
        if plain:
            return _plain(client, rid, changed, out or sys.stdout, wake_after)
        with Live(render(release, []), console=console, refresh_per_second=4) as live:
            while True:
                release = client.get(f"/v1/releases/{rid}")
                events = client.get_all(f"/v1/releases/{rid}/events")
                live.update(render(release, events))
                if release["phase"] in EXIT:
                    return EXIT[release["phase"]]
                # wake on a change at once; otherwise refresh the countdown each second
                changed.wait(timeout=wake_after)
                changed.clear()
    finally:
        stop.set()
        stream.close()


def _plain(
    client: ApiClient, rid: str, changed: threading.Event, out: TextIO, wake_after: float
) -> int:
    after = 0
    last_verdict: tuple[Any, ...] | None = None
    while True:
        release = client.get(f"/v1/releases/{rid}")
        events = _events_after(client, rid, after)
        for ev in events:
            after = max(after, int(ev["id"]))
            if ev["kind"] == "analysis":
                key = _verdict_key(ev)
                if key == last_verdict:
                    continue
                last_verdict = key
            out.write(plain_line(release, ev) + "\n")
        out.flush()
        phase = release["phase"]
        if phase in EXIT:
            code = EXIT[phase]
            why = f": {release['reason']}" if release.get("reason") else ""
            out.write(f"{release['id']} {phase} at {pct(release['exposure'])}{why} (exit {code})\n")
            out.flush()
            return code
        changed.wait(timeout=wake_after)
        changed.clear()


def _events_after(client: ApiClient, rid: str, after: int) -> list[dict[str, Any]]:
    """The release's events with an id above ``after``, oldest first (paged)."""
    events: list[dict[str, Any]] = []
    while True:
        page: list[dict[str, Any]] = client.get(
            f"/v1/releases/{rid}/events", after=after, limit=1000
        )
        events += page
        if len(page) < 1000:
            return events
        after = int(page[-1]["id"])
