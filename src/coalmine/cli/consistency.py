"""`coalmine consistency`: do the SDK, discovery and the gateway agree for every user?

DESIGN rule 1 says one user gets one decision everywhere. This command checks
it from the outside, for N user ids of every kind (`user_keys`: ASCII, accents
composed and decomposed, non-Latin scripts, emoji, e-mail addresses, and
characters a wire must escape), each sent as `coalmine.core.userkey` says:

- ``sdk``: what `coalmine.sdk.Client` decides (the core's `evaluate` on the
  snapshot it follows): the reference;
- ``discovery``: ``POST /v1/discovery/batch`` (10,000 users a request);
- ``gateway`` (with ``--gateway``): the ``x-coalmine-channel`` and
  ``x-coalmine-version`` headers of ``GET <gateway>/<function>/`` with
  ``x-user-id`` (percent-encoded UTF-8: the gateway must trust that header,
  ``--user-header x-user-id``); user *i* calls function *i mod F*, one
  request each. These are real calls: each runs the version's function
  (its side effects, its metrics) as that user, so ``--gateway`` belongs on
  a gateway whose functions may be called so; the help and the output say it.

A change of the app between the reads would show as mismatches, so the
revisions the sources saw are compared and the whole check is repeated (up to
three times) until they are one. Exit 0 when every source agrees, 1 otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from coalmine.cli.client import DEFAULT_URL, ApiClient, CliError
from coalmine.cli.output import console, print_json
from coalmine.core.bucketing import BUCKETS
from coalmine.core.model import Decision, RouteMode
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.core.userkey import encode_header

__all__ = [
    "BATCH",
    "ID_KINDS",
    "Mismatch",
    "Observation",
    "Report",
    "command",
    "compare",
    "observe_answer",
    "observe_decision",
    "user_keys",
]

BATCH = 10_000
"""users per discovery batch request (the endpoint's limit)"""
REFERENCE = "sdk"
ATTEMPTS = 3
EXAMPLES = 20
"""mismatches kept per source for display"""
CHANNEL_HEADER = "x-coalmine-channel"
VERSION_HEADER = "x-coalmine-version"
USER_HEADER = "x-user-id"


@dataclass(frozen=True, slots=True)
class Observation:
    """What one source said about one user."""

    channel: str | None
    versions: Mapping[str, str] = field(default_factory=dict)
    partial: bool = False
    """only ``versions``' functions were observed (the gateway sees one per request)"""
    error: str | None = None

    def describe(self, functions: Sequence[str] | None = None) -> str:
        if self.error is not None:
            return f"error: {self.error}"
        names = functions if functions is not None else sorted(self.versions)
        versions = " ".join(f"{fn}={self.versions.get(fn, '-')}" for fn in names)
        return f"{self.channel or '-'} {versions}".strip()


@dataclass(frozen=True, slots=True)
class Mismatch:
    user: str
    source: str
    expected: str
    got: str

    def to_dict(self) -> dict[str, str]:
        return {
            "user": self.user,
            "source": self.source,
            "expected": self.expected,
            "got": self.got,
        }


def observe_decision(decision: Decision) -> Observation:
    return Observation(str(decision.channel), dict(decision.versions))


def observe_answer(answer: Mapping[str, Any]) -> Observation:
    return Observation(answer.get("channel"), dict(answer.get("versions") or {}))


def _differs(expected: Observation, got: Observation) -> bool:
    if got.error is not None or expected.error is not None:
        return True
    if got.channel != expected.channel:
        return True
    if got.partial:
        return any(expected.versions.get(fn) != v for fn, v in got.versions.items())
    return dict(got.versions) != dict(expected.versions)


def compare(
    reference: Mapping[str, Observation], source: str, observed: Mapping[str, Observation]
) -> list[Mismatch]:
    """Every user whose channel or versions in ``observed`` differ from ``reference``.

    A partial observation is compared on the functions it saw; a user the
    source did not answer for is a mismatch.
    """
    out: list[Mismatch] = []
    for user, expected in reference.items():
        got = observed.get(user, Observation(None, error="no answer"))
        if _differs(expected, got):
            names = sorted(got.versions) if got.partial else None
            out.append(Mismatch(user, source, expected.describe(names), got.describe(names)))
    return out


@dataclass
class Report:
    users: int
    sources: list[str]
    mismatches: dict[str, list[Mismatch]]
    revision: int
    seconds: dict[str, float] = field(default_factory=dict)
    attempts: int = 1
    gateway_calls: int = 0
    """requests made through the gateway: each ran a function (not side-effect free)"""

    @property
    def mismatched_users(self) -> int:
        return len({m.user for ms in self.mismatches.values() for m in ms})

    @property
    def summary(self) -> str:
        return (
            f"{self.mismatched_users} mismatches of {self.users} users"
            f" across {len(self.sources)} sources"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "sources": self.sources,
            "mismatches": {s: len(ms) for s, ms in self.mismatches.items()},
            "mismatched_users": self.mismatched_users,
            "examples": {
                s: [m.to_dict() for m in ms[:EXAMPLES]] for s, ms in self.mismatches.items()
            },
            "revision": self.revision,
            "seconds": {s: round(v, 3) for s, v in self.seconds.items()},
            "attempts": self.attempts,
            "gateway_calls": self.gateway_calls,
        }


ID_KINDS = (
    "user-{i}",
    "zoë-{i}",  # composed
    "zoe\u0308-{i}",  # the same letters decomposed: another id, never normalised
    "用户-{i}",
    "пользователь-{i}",
    "مستخدم-{i}",
    "🐤-{i}",
    "user.{i}+tag@example.com",
    '50% off; "{i}", ok?',  # characters a header or cookie must escape
)
"""the kinds of user id checked, in turn"""


def user_keys(n: int) -> list[str]:
    """``n`` distinct user ids, of every kind of `ID_KINDS` in turn."""
    return [ID_KINDS[i % len(ID_KINDS)].format(i=i) for i in range(n)]


def _timed(seconds: dict[str, float], name: str, run: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    try:
        return run()
    finally:
        seconds[name] = time.perf_counter() - start


def _refuse_random(snapshot: RoutingSnapshot) -> None:
    rel = snapshot.state.release
    random = rel is not None and rel.route_mode is RouteMode.REQUEST
    if random and 0 < snapshot.state.exposure < BUCKETS:
        raise CliError(
            f"app {snapshot.app!r} routes per request (route mode request): every answer"
            " is a fresh roll, so there is nothing to compare",
            2,
        )


def _discovery(
    api: ApiClient, app: str, users: list[str]
) -> tuple[dict[str, Observation], set[int]]:
    observed: dict[str, Observation] = {}
    revisions: set[int] = set()
    for start in range(0, len(users), BATCH):
        chunk = users[start : start + BATCH]
        body = api.post("/v1/discovery/batch", {"app": app, "users": chunk})
        revisions.add(int(body["revision"]))
        for user, answer in zip(chunk, body["answers"], strict=False):
            observed[user] = observe_answer(answer)
    return observed, revisions


def _gateway(
    base: str, users: list[str], functions: list[str], concurrency: int
) -> dict[str, Observation]:
    """One ``GET <gateway>/<function>/`` per user, ``concurrency`` at a time (threads)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    def one(http: httpx.Client, i: int, user: str) -> Observation:
        fn = functions[i % len(functions)]
        try:
            r = http.get(f"/{fn}/", headers={USER_HEADER: encode_header(user)})
        except httpx.HTTPError as exc:
            return Observation(None, partial=True, error=f"{type(exc).__name__}: {exc}")
        channel = r.headers.get(CHANNEL_HEADER)
        version = r.headers.get(VERSION_HEADER)
        if channel is None or version is None:
            error = f"HTTP {r.status_code} without {CHANNEL_HEADER} / {VERSION_HEADER}"
            return Observation(None, partial=True, error=error)
        return Observation(channel, {fn: version}, partial=True)

    with (
        httpx.Client(base_url=base, limits=limits, timeout=30.0) as http,
        ThreadPoolExecutor(concurrency, thread_name_prefix="coalmine-consistency") as pool,
    ):
        found = pool.map(lambda iu: one(http, *iu), enumerate(users))
        return dict(zip(users, found, strict=True))


def check(
    app: str,
    users: int,
    control_plane: str | None,
    sdk_key: str,
    *,
    gateway: str | None = None,
    concurrency: int = 8,
    wait: float = 10.0,
) -> Report:
    """Ask every source about ``users`` users and compare them with the SDK's decisions."""
    from coalmine.sdk import Client  # the SDK starts a thread: import it only when used

    keys = user_keys(users)
    sources = [REFERENCE, "discovery", *(["gateway"] if gateway else [])]
    with ApiClient(control_plane, sdk_key) as api:
        # the control plane's own answer first: a wrong key or app fails here, in one line
        first = RoutingSnapshot.from_dict(api.get(f"/v1/apps/{app}/routing"))
        _refuse_random(first)
        functions = sorted(first.state.stable_versions) or sorted(first.state.versions)
        if gateway and not functions:
            raise CliError(f"app {app!r} has no function to call through the gateway", 2)
        sdk = Client(api.url, sdk_key, apps=[app], wait=wait)
        try:
            report: Report | None = None
            for attempt in range(1, ATTEMPTS + 1):
                snap = sdk.snapshot(app)
                if snap is None:
                    raise CliError(
                        f"the SDK got no routing for {app!r}: {sdk.status(app).last_error}"
                    )
                seconds: dict[str, float] = {}
                reference = _timed(
                    seconds,
                    REFERENCE,
                    lambda: {u: observe_decision(sdk.decide(app, u)) for u in keys},
                )
                revisions = {snap.revision, (sdk.snapshot(app) or snap).revision}
                discovered, seen = _timed(seconds, "discovery", lambda: _discovery(api, app, keys))
                revisions |= seen
                mismatches = {"discovery": compare(reference, "discovery", discovered)}
                if gateway:
                    observed = _timed(
                        seconds,
                        "gateway",
                        lambda: _gateway(gateway.rstrip("/"), keys, functions, concurrency),
                    )
                    mismatches["gateway"] = compare(reference, "gateway", observed)
                    revisions.add(int(api.get(f"/v1/apps/{app}/routing")["revision"]))
                report = Report(users, sources, mismatches, max(revisions), seconds, attempt)
                if gateway:
                    report.gateway_calls = attempt * users
                if len(revisions) == 1 or report.mismatched_users == 0:
                    return report
                time.sleep(0.5)  # the app changed between the reads: let the SDK catch up
            assert report is not None
            return report
        finally:
            sdk.close()


def _print(report: Report) -> None:
    table = Table("source", "users", "mismatches", "seconds")
    table.add_row(f"{REFERENCE} (reference)", str(report.users), "-", _secs(report, REFERENCE))
    for source, found in report.mismatches.items():
        table.add_row(source, str(report.users), str(len(found)), _secs(report, source))
    console.print(table)
    examples = [m for found in report.mismatches.values() for m in found[:EXAMPLES]]
    if examples:
        detail = Table("user", "source", f"expected ({REFERENCE})", "got")
        for m in examples:
            detail.add_row(m.user, m.source, m.expected, m.got)
        console.print(detail)
    console.print(f"revision {report.revision}; {report.summary}", highlight=False)
    if report.gateway_calls:
        console.print(
            f"the gateway check called the app's functions {report.gateway_calls} times"
            " (one GET a user): each call ran the function, side effects and metrics included",
            highlight=False,
        )


def _secs(report: Report, source: str) -> str:
    value = report.seconds.get(source)
    return "-" if value is None else f"{value:.2f}"


def command(
    app_name: Annotated[str, typer.Option("--app", metavar="APP", help="The app to check.")],
    sdk_key: Annotated[
        str,
        typer.Option(
            "--sdk-key",
            envvar="COALMINE_SDK_KEY",
            metavar="KEY",
            help="The app's sdk key.",
            show_default=False,
        ),
    ],
    users: Annotated[
        int,
        typer.Option("--users", min=1, max=1_000_000, metavar="N", help="Users to check."),
    ] = 10_000,
    control_plane: Annotated[
        str | None,
        typer.Option(
            "--control-plane",
            envvar="COALMINE_URL",
            metavar="URL",
            help=f"Control plane URL (default {DEFAULT_URL}).",
            show_default=False,
        ),
    ] = None,
    gateway: Annotated[
        str | None,
        typer.Option(
            "--gateway",
            metavar="URL",
            help="Also ask this gateway, one GET /FUNCTION/ a user. These CALL the functions"
            " (their side effects and metrics happen), once per user checked.",
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, max=256, metavar="N", help="Gateway requests in flight.")
    ] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Check that the SDK, discovery and the gateway give every user the same decision.

    The SDK and discovery only decide; with --gateway every user checked makes one
    real call of a function through the gateway (side effects included).
    """
    report = check(
        app_name, users, control_plane, sdk_key, gateway=gateway, concurrency=concurrency
    )
    if as_json:
        print_json(report.to_dict())
    else:
        _print(report)
    if report.mismatched_users:
        raise typer.Exit(1)
