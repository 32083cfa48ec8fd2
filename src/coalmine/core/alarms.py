"""Alarms, the pure part: names, states, evaluations, and the fix-forward rule.

An alarm is an outside signal that rolls a release back at once. The rule
every alarm source obeys: an alarm that was already firing when the release
was created is not the canary's doing. It is reported (an ``alarm`` event on
the release) and does not roll back; only one that started firing once the
release existed does (`attributable`). An alarm that cannot be evaluated is
reported and never rolls back: nothing can be attributed to the canary from
no answer. The sources themselves (HTTP-raised alarms in
``coalmine.controller.alarms``, Prometheus queries in
``coalmine.integrations.prometheus``, CloudWatch alarms in
``coalmine.integrations.cloudwatch``) implement `coalmine.core.ports.AlarmSource`.

A source that knows when its alarm started firing says so (``since``), and
one that can tell whom its metrics blame says that too (``blame``, see
`coalmine.core.attribution`): a firing alarm whose blame is not the
candidate never rolls back on its own, the judge decides.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from coalmine.core.attribution import Blame
from coalmine.core.errors import InvalidInput
from coalmine.core.model import ACTIVE_PHASES
from coalmine.core.records import AlarmRecord, AlarmState, ReleaseRecord
from coalmine.core.text import text_problem

__all__ = [
    "AlarmEvaluation",
    "AlarmNoticeAction",
    "AlarmState",
    "Blame",
    "EvaluationState",
    "alarm_actor",
    "attributable",
    "firing_before",
    "notice_action",
    "parse_state",
    "rollback_reason",
    "validate_alarm_name",
    "when",
]

_MAX_NAME = 255
_MAX_ACTOR = 120  # events.actor
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def validate_alarm_name(value: object) -> str:
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= _MAX_NAME
        or _CONTROL.search(value)
        or text_problem(value) is not None
        or value != value.strip()
    ):
        raise InvalidInput(
            f"invalid alarm name {value!r}: use 1-{_MAX_NAME} printable characters"
            " without leading or trailing spaces"
        )
    return value


def parse_state(value: object) -> AlarmState:
    """``ALARM`` or ``OK`` in any case; CloudWatch's ``INSUFFICIENT_DATA`` is OK."""
    text = value.upper() if isinstance(value, str) else None
    if text == "INSUFFICIENT_DATA":
        return AlarmState.OK
    if text in ("ALARM", "OK"):
        return AlarmState(text)
    raise InvalidInput(
        f"invalid alarm state {value!r}: use ALARM or OK (INSUFFICIENT_DATA counts as OK)"
    )


class EvaluationState(StrEnum):
    FIRING = "firing"
    OK = "ok"
    ERROR = "error"
    """the alarm could not be evaluated: reported, never a rollback"""


@dataclass(frozen=True, slots=True)
class AlarmEvaluation:
    """One evaluation of an alarm source, with a sentence that explains it."""

    name: str
    state: EvaluationState
    detail: str
    value: float | None = None
    since: float | None = None
    """when the alarm entered its current state (Unix time), when the source knows"""
    blame: Blame | None = None
    """whom a firing alarm blames by its metrics; None: the source cannot tell (then the
    fix-forward rule alone decides)"""

    @property
    def rolls_back(self) -> bool:
        """Whether, firing and new, it rolls back on its own (its blame is not someone else)."""
        return self.blame in (None, Blame.CANDIDATE)

    def to_dict(self) -> dict[str, Any]:
        value = self.value if self.value is not None and math.isfinite(self.value) else None
        out: dict[str, Any] = {
            "name": self.name,
            "state": str(self.state),
            "detail": self.detail,
            "value": value,
        }
        if self.since is not None:
            out["since"] = self.since
        if self.blame is not None:
            out["blame"] = str(self.blame)
        return out


def attributable(alarm_since: float, release_created_at: float) -> bool:
    """Whether a firing alarm may be the canary's doing: it started firing once the
    release existed. An alarm already firing before is not (the fix-forward rule)."""
    return alarm_since >= release_created_at


def when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def firing_before(name: str, since: float, release_id: str, reason: str = "") -> str:
    """The sentence reporting an alarm that is not attributed to the canary."""
    why = f" ({reason})" if reason else ""
    return (
        f"alarm {name} has been firing since {when(since)}, before release {release_id}"
        f" was created: not attributed to the canary, no rollback{why}"
    )


def rollback_reason(name: str, reason: str) -> str:
    return f"alarm {name} fired: {reason}" if reason else f"alarm {name} fired"


def alarm_actor(name: str) -> str:
    actor = f"alarm:{name}"
    return actor if len(actor) <= _MAX_ACTOR else actor[: _MAX_ACTOR - 1] + "…"


@dataclass(frozen=True, slots=True)
class AlarmNoticeAction:
    """What one alarm notice does to the app's active release."""

    action: Literal["rolled_back", "not_attributed", "none"]
    message: str
    """the rollback reason, or the ``alarm`` event's message"""
    event: bool
    """whether to write an ``alarm`` audit event with ``message``"""


def notice_action(
    alarm: AlarmRecord, changed: bool, release: ReleaseRecord | None
) -> AlarmNoticeAction:
    """The pure rule: roll back, report as not attributed, or only note the state."""
    name, reason = alarm.name, alarm.reason
    why = f": {reason}" if reason else ""
    if alarm.state is AlarmState.OK:
        return AlarmNoticeAction("none", f"alarm {name} is OK{why}", changed)
    if release is None:
        return AlarmNoticeAction(
            "none", f"alarm {name} is firing{why} (no active release)", changed
        )
    if release.phase not in ACTIVE_PHASES:
        return AlarmNoticeAction(
            "none",
            f"alarm {name} is firing{why} (release {release.id} is {release.phase})",
            changed,
        )
    if attributable(alarm.since, release.created_at):
        return AlarmNoticeAction("rolled_back", rollback_reason(name, reason), False)
    return AlarmNoticeAction(
        "not_attributed", firing_before(name, alarm.since, release.id, reason), True
    )
