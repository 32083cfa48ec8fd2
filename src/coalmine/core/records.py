"""The control plane's stored things, as the controller sees them: typed, with core enums.

A `ReleaseRecord` is a release with its rollout state (phase, step, timers,
hooks, analysis settings, when traffic started); an `EventRecord` is one
entry of the audit log; an `AlarmRecord` an outside alarm's last state; an
`AnalysisRunRecord` one interval of the judge. Repositories (``coalmine.store``)
make them from rows, services hand them to the controller and to the API,
which turns them into its wire schemas. Nothing here parses strings a
second time: phases, hooks, states and outcomes are enums.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from coalmine.core.errors import InvalidInput
from coalmine.core.machine import EventKind, Hook, Progress, Transition
from coalmine.core.model import Phase, Release, RouteMode, Targeting, VersionMap
from coalmine.core.strategy import Strategy
from coalmine.core.tracker import Action
from coalmine.core.verdict import Outcome

__all__ = [
    "AlarmRecord",
    "AlarmState",
    "AnalysisRunRecord",
    "EventRecord",
    "HookConfig",
    "ReleaseRecord",
]


@dataclass(frozen=True, slots=True)
class HookConfig:
    """Where and how to call one lifecycle hook (validated by the API's ``HookSpec``).

    A hook is an HTTP ``url`` or a Lambda function (``lambda_function``, a
    name or an ARN, possibly qualified): exactly one of the two.
    """

    url: str | None = None
    timeout: float = 10.0
    """seconds per attempt"""
    retries: int = 2
    """extra attempts after a failure"""
    headers: Mapping[str, str] = field(default_factory=dict)
    """HTTP headers sent with a ``url`` hook"""
    lambda_function: str | None = None

    def __post_init__(self) -> None:
        if (self.url is None) == (self.lambda_function is None):
            raise InvalidInput("a hook needs exactly one of url and lambda")

    @property
    def where(self) -> str:
        """What the hook calls, as messages name it: the URL, or ``lambda <function>``."""
        return self.url if self.url is not None else f"lambda {self.lambda_function}"

    @property
    def deadline(self) -> float:
        """Seconds after which a hook that never reported back counts as failed."""
        return self.timeout * (self.retries + 1) + 30.0

    def to_dict(self) -> dict[str, Any]:
        """Its stored (and wire) form: ``url`` or ``lambda``, timeout, retries, headers."""
        where = {"url": self.url} if self.url is not None else {"lambda": self.lambda_function}
        return {
            **where,
            "timeout": self.timeout,
            "retries": self.retries,
            "headers": dict(self.headers),
        }

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> HookConfig:
        """From `to_dict`'s form; rows stored before Lambda hooks have only ``url``."""
        return cls(
            url=data.get("url"),
            timeout=float(data.get("timeout", 10.0)),
            retries=int(data.get("retries", 2)),
            headers=dict(data.get("headers") or {}),
            lambda_function=data.get("lambda"),
        )


@dataclass(frozen=True, slots=True)
class ReleaseRecord:
    """A release and where it is in its rollout."""

    id: str
    app: str
    phase: Phase
    route_mode: RouteMode
    salt: str
    strategy: Strategy
    baseline: VersionMap
    candidate: VersionMap
    targeting: Targeting
    hooks: Mapping[Hook, HookConfig]
    analysis: Mapping[str, Any]
    """the release's ``analysis`` object as given (parsed by the analysis step)"""
    exposure: int
    step: int
    next_action_at: float | None
    paused_remaining: float | None
    reason: str | None
    created_by: str
    created_at: float
    updated_at: float
    finished_at: float | None
    started_at: float | None
    """when users first reached the candidate (the judge's window starts here)"""
    row_version: int
    lambda_alias: str | None = None
    """the Lambda alias kept true for its changed functions (the app's
    ``release.lambda_alias`` when it started); None: none is kept"""

    @property
    def changed(self) -> list[str]:
        """The functions whose candidate differs from the baseline, sorted."""
        return sorted(fn for fn in self.candidate if self.candidate[fn] != self.baseline.get(fn))

    @property
    def progress(self) -> Progress:
        return Progress(
            phase=self.phase,
            step=self.step,
            exposure=self.exposure,
            next_action_at=self.next_action_at,
            paused_remaining=self.paused_remaining,
            reason=self.reason,
        )

    @property
    def hook_deadline(self) -> float:
        """The longest any of its hooks may take (300 s without hooks)."""
        return max((h.deadline for h in self.hooks.values()), default=300.0)

    def after(self, t: Transition, now: float) -> ReleaseRecord:
        """The release once transition ``t`` is applied at ``now``: what every store writes.

        ``started_at`` is set by the first ``started`` transition, ``finished_at``
        when it is promoted or rolled back; ``row_version`` grows by one.
        """
        p = t.progress
        started = t.kind is EventKind.STARTED and self.started_at is None
        ended = p.phase in (Phase.PROMOTED, Phase.ROLLED_BACK)
        return replace(
            self,
            phase=p.phase,
            step=p.step,
            exposure=p.exposure,
            next_action_at=p.next_action_at,
            paused_remaining=p.paused_remaining,
            reason=p.reason,
            updated_at=now,
            started_at=now if started else self.started_at,
            finished_at=now if ended else self.finished_at,
            row_version=self.row_version + 1,
        )

    def routing(self) -> Release:
        """The release as the routing core needs it."""
        return Release(
            id=self.id,
            app=self.app,
            baseline=self.baseline,
            candidate=self.candidate,
            salt=self.salt,
            strategy=self.strategy,
            route_mode=self.route_mode,
            exposure=self.exposure,
            phase=self.phase,
            targeting=self.targeting,
        )


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One entry of the audit log: what happened, never where to look up what is."""

    id: int
    app: str
    release_id: str | None
    at: float
    actor: str
    kind: str
    message: str
    phase: str | None
    exposure: int | None
    data: Mapping[str, Any]


class AlarmState(StrEnum):
    ALARM = "ALARM"
    OK = "OK"


@dataclass(frozen=True, slots=True)
class AlarmRecord:
    """An HTTP-raised alarm's latest state."""

    app: str
    name: str
    state: AlarmState
    reason: str
    since: float
    """when it entered its current state"""
    updated_at: float
    reported_release: str | None = None
    """the release a firing-before-the-release report was written for (once per release)"""


@dataclass(frozen=True, slots=True)
class AnalysisRunRecord:
    """One interval of the judge: its verdict, what it decided, and whether that was done."""

    id: int
    release_id: str
    at: float
    window_start: float
    window_end: float
    outcome: Outcome
    action: Action
    results: Mapping[str, Any]
    applied: bool
    """whether ``action`` (a rollback or pause) has been carried out"""
