"""Alarms: outside signals that roll a release back at once.

Two kinds of source:

* **HTTP-raised alarms.** ``POST /v1/alarms`` records an alarm's state in
  the store, from a simple body ``{"app", "name", "state", "reason"}`` or
  from a CloudWatch alarm's SNS notification (`parse_notice`); the app is
  the ``?app=`` query parameter, the simple body's ``app``, or the alarm
  name's convention ``coalmine:<app>:<name>``. `ControlService.raise_alarm`
  stores it and applies `decide`; `AlarmWatcher` re-checks the stored
  alarms every controller tick, so a rollback lost to a crash between the
  two is made on the next tick.
* **Prometheus alarms.** A release's analysis settings may list PromQL
  queries (``"alarms": [{"name", "prometheus", "query", "above"}]``,
  `parse_alarms`); the analysis runner evaluates each every interval with
  `PrometheusAlarm.evaluate` (``GET /api/v1/query``).

The fix-forward rule: an alarm that was already firing when the release was
created is not the canary's doing. It is reported (an ``alarm`` event on the
release) and does not roll back; only a transition to firing after the
release was created does (`attributable`). A Prometheus alarm that cannot
be evaluated (a query error, an unreachable server) is reported and never
rolls back: nothing can be attributed to the canary from no answer.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import httpx

from coalmine.core.errors import Conflict, InvalidInput
from coalmine.core.machine import Command, EventKind, InvalidTransition
from coalmine.core.model import ACTIVE_PHASES, Phase, validate_name

if TYPE_CHECKING:
    from coalmine.controller.schemas import AlarmRead, ReleaseRead
    from coalmine.controller.service import ControlService

__all__ = [
    "ALARM_NAME_PREFIX",
    "AlarmDecision",
    "AlarmEvaluation",
    "AlarmNotice",
    "AlarmSource",
    "AlarmState",
    "AlarmWatcher",
    "EvaluationState",
    "PrometheusAlarm",
    "alarm_actor",
    "attributable",
    "decide",
    "firing_before",
    "parse_alarms",
    "parse_notice",
    "parse_state",
    "roll_back",
    "rollback_reason",
    "validate_alarm_name",
    "when",
]

log = logging.getLogger(__name__)

ALARM_NAME_PREFIX = "coalmine:"
"""An alarm named ``coalmine:<app>:<name>`` belongs to ``<app>`` (no ``?app=`` needed)."""
_MAX_NAME = 255
_MAX_REASON = 2000
_MAX_QUERY = 10_000
_MAX_ACTOR = 120  # events.actor
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ROLLBACK_ATTEMPTS = 3
_SIMPLE_FIELDS = ("app", "name", "state", "reason")
_PROMETHEUS_FIELDS = ("name", "prometheus", "query", "above", "below", "timeout")


class AlarmState(StrEnum):
    ALARM = "ALARM"
    OK = "OK"


def validate_alarm_name(value: object) -> str:
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= _MAX_NAME
        or _CONTROL.search(value)
        or value != value.strip()
    ):
        raise InvalidInput(
            f"invalid alarm name {value!r}: use 1-{_MAX_NAME} printable characters"
            " without leading or trailing spaces"
        )
    return value


def _reason(value: object, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, got {type(value).__name__}")
    text = " ".join(value.split())  # one line: it ends up in an event message
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


# -- HTTP-raised alarms: the two body shapes ------------------------------------------


@dataclass(frozen=True, slots=True)
class AlarmNotice:
    """One alarm state change, read from either body shape."""

    app: str
    name: str
    state: AlarmState
    reason: str = ""


def _load(body: bytes | str | object) -> object:
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("the body is not UTF-8 text") from None
    if isinstance(body, str):
        if not body.strip():
            raise InvalidInput(
                'empty body: send {"app", "name", "state", "reason"} or an SNS notification'
            )
        try:
            return json.loads(body)
        except ValueError as exc:
            raise InvalidInput(f"the body is not JSON: {exc}") from None
    return body


def parse_notice(body: bytes | str | object, *, app: str | None = None) -> AlarmNotice:
    """Read an alarm notice from a request body (bytes, text or parsed JSON).

    Accepted shapes:

    * simple: ``{"app": "shop", "name": "p99", "state": "ALARM", "reason": "..."}``
      (``app`` optional when given otherwise, ``reason`` optional);
    * an SNS HTTP notification whose ``Message`` is a CloudWatch alarm's JSON
      (``AlarmName``, ``NewStateValue``, ``NewStateReason``), or the same
      notification as a Lambda receives it (``{"Records": [{"Sns": {...}}]}``).

    ``app`` is the ``?app=`` query parameter. The alarm name ``coalmine:<app>:<name>``
    names the app too; given twice, both must agree. CloudWatch's
    ``INSUFFICIENT_DATA`` counts as OK (not firing). Raises `InvalidInput`
    naming the problem.
    """
    data = _load(body)
    if not isinstance(data, Mapping):
        raise InvalidInput(
            'the body must be a JSON object: {"app", "name", "state", "reason"}'
            " or an SNS notification"
        )
    if "Records" in data:
        data = _lambda_record(data["Records"])
    if any(k in data for k in ("Type", "Message", "TopicArn")):
        name, state, reason, body_app = _sns(data)
    else:
        name, state, reason, body_app = _simple(data)
    name = validate_alarm_name(name)
    named_app: str | None = None
    if name.startswith(ALARM_NAME_PREFIX):
        parts = name[len(ALARM_NAME_PREFIX) :].split(":", 1)
        if len(parts) != 2 or not parts[1]:
            raise InvalidInput(
                f"alarm name {name!r} starts with {ALARM_NAME_PREFIX!r} but is not"
                " coalmine:<app>:<name>"
            )
        named_app, name = parts[0], validate_alarm_name(parts[1])
    given = {
        where: value
        for where, value in (("?app=", app), ("the body's app", body_app), ("the name", named_app))
        if value is not None
    }
    if not given:
        raise InvalidInput(
            "which app is the alarm for? add ?app=<app> to the URL, name the alarm"
            " coalmine:<app>:<name>, or give app in the body"
        )
    if len(set(given.values())) > 1:
        says = ", ".join(f"{where} says {value!r}" for where, value in given.items())
        raise InvalidInput(f"the app is given more than once and differs: {says}")
    the_app = validate_name(next(iter(given.values())), "app")
    return AlarmNotice(the_app, name, parse_state(state), reason)


def _lambda_record(records: object) -> Mapping[str, Any]:
    if (
        not isinstance(records, list)
        or len(records) != 1
        or not isinstance(records[0], Mapping)
        or not isinstance(records[0].get("Sns"), Mapping)
    ):
        raise InvalidInput('Records must be a list of one SNS record: [{"Sns": {...}}]')
    sns: Mapping[str, Any] = records[0]["Sns"]
    return sns


def _sns(data: Mapping[str, Any]) -> tuple[object, object, str, None]:
    kind = data.get("Type", "Notification")
    if kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        raise InvalidInput(
            f"an SNS {kind} is not followed here (coalmine makes no outbound requests for it):"
            " confirm the subscription by opening its SubscribeURL yourself"
        )
    if kind != "Notification":
        raise InvalidInput(f"SNS Type {kind!r} is not a Notification")
    message = data.get("Message")
    if isinstance(message, str):
        try:
            message = json.loads(message)
        except ValueError:
            raise InvalidInput(
                "the SNS Message is not JSON: expected a CloudWatch alarm notification"
                " (AlarmName, NewStateValue, NewStateReason)"
            ) from None
    if not isinstance(message, Mapping):
        raise InvalidInput(
            "the SNS notification needs a Message holding a CloudWatch alarm's JSON"
            " (AlarmName, NewStateValue, NewStateReason)"
        )
    missing = [k for k in ("AlarmName", "NewStateValue") if k not in message]
    if missing:
        raise InvalidInput(
            f"the SNS Message is not a CloudWatch alarm notification: missing {', '.join(missing)}"
        )
    state = message["NewStateValue"]
    reason = _reason(message.get("NewStateReason"), "NewStateReason")
    if isinstance(state, str) and state.upper() == "INSUFFICIENT_DATA":
        reason = f"INSUFFICIENT_DATA: {reason}" if reason else "INSUFFICIENT_DATA"
    return message["AlarmName"], state, reason, None


def _simple(data: Mapping[str, Any]) -> tuple[object, object, str, str | None]:
    unknown = sorted(str(k) for k in data if k not in _SIMPLE_FIELDS)
    if unknown:
        raise InvalidInput(
            f"unknown field(s) {', '.join(unknown)}: send app, name, state and reason"
            " (or an SNS notification)"
        )
    missing = [k for k in ("name", "state") if k not in data]
    if missing:
        raise InvalidInput(
            f"missing {' and '.join(missing)}: send"
            ' {"app": "shop", "name": "p99", "state": "ALARM", "reason": "..."}'
        )
    body_app = data.get("app")
    if body_app is not None and not isinstance(body_app, str):
        raise InvalidInput(f"app must be a string, got {type(body_app).__name__}")
    return data["name"], data["state"], _reason(data.get("reason"), "reason"), body_app


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


# -- what an HTTP-raised alarm does ---------------------------------------------------


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
class AlarmDecision:
    """What one alarm notice does to the app's active release."""

    action: Literal["rolled_back", "not_attributed", "none"]
    message: str
    """the rollback reason, or the ``alarm`` event's message"""
    event: bool
    """whether to write an ``alarm`` audit event with ``message``"""


def decide(alarm: AlarmRead, changed: bool, release: ReleaseRead | None) -> AlarmDecision:
    """The pure rule: roll back, report as not attributed, or only note the state."""
    name, reason = alarm.name, alarm.reason
    why = f": {reason}" if reason else ""
    if alarm.state == AlarmState.OK:
        return AlarmDecision("none", f"alarm {name} is OK{why}", changed)
    if release is None:
        return AlarmDecision("none", f"alarm {name} is firing{why} (no active release)", changed)
    if Phase(release.phase) not in ACTIVE_PHASES:
        return AlarmDecision(
            "none",
            f"alarm {name} is firing{why} (release {release.id} is {release.phase})",
            changed,
        )
    if attributable(alarm.since, release.created_at):
        return AlarmDecision("rolled_back", rollback_reason(name, reason), False)
    return AlarmDecision(
        "not_attributed", firing_before(name, alarm.since, release.id, reason), True
    )


def roll_back(service: ControlService, release_id: str, actor: str, reason: str) -> bool:
    """Roll a release back, retrying when another writer changed it meanwhile.

    False when the release cannot be rolled back any more (it ended meanwhile).
    """
    for attempt in range(_ROLLBACK_ATTEMPTS):
        try:
            service.operate(release_id, Command.ROLLBACK, actor, reason)
        except Conflict:
            if attempt == _ROLLBACK_ATTEMPTS - 1:
                raise
            continue
        except InvalidTransition as exc:
            log.info("alarms: release %s not rolled back: %s", release_id, exc)
            return False
        log.warning("alarms: release %s rolled back by %s: %s", release_id, actor, reason)
        return True
    return False  # pragma: no cover - the loop returns or raises


class AlarmWatcher:
    """Re-checks the stored alarms every controller tick.

    A firing alarm that became firing after its app's active release was
    created rolls the release back (normally `ControlService.raise_alarm`
    already did, at once: this makes it certain after a crash). One that was
    firing before is reported once per release (an ``alarm`` event) and
    left alone.
    """

    def __init__(self, service: ControlService) -> None:
        self.service = service
        self._reported: set[tuple[str, str, str, float]] = set()

    def check(self) -> int:
        """Roll back what firing alarms call for; the number of rollbacks made."""
        firing = self.service.firing_alarms()
        if not firing:
            self._reported.clear()
            return 0
        releases = {r.app: r for r in self.service.active_releases()}
        active = {r.id for r in releases.values()}
        self._reported = {k for k in self._reported if k[0] in active}
        made = 0
        for alarm in firing:
            release = releases.get(alarm.app)
            if release is None or Phase(release.phase) not in ACTIVE_PHASES:
                continue
            if attributable(alarm.since, release.created_at):
                reason = rollback_reason(alarm.name, alarm.reason)
                if roll_back(self.service, release.id, alarm_actor(alarm.name), reason):
                    made += 1
                    releases.pop(alarm.app)
                continue
            key = (release.id, alarm.app, alarm.name, alarm.since)
            if key in self._reported:
                continue
            if not self._reported_before(release.id, alarm):
                self.service.record(
                    release.id,
                    str(EventKind.ALARM),
                    firing_before(alarm.name, alarm.since, release.id, alarm.reason),
                    "controller",
                    {"alarm": alarm.name, "state": alarm.state, "since": alarm.since},
                )
            self._reported.add(key)
        return made

    def _reported_before(self, release_id: str, alarm: AlarmRead) -> bool:
        """Whether the release already has this report (from a notice, or another process)."""
        return any(
            e.kind == EventKind.ALARM
            and e.data.get("alarm") == alarm.name
            and e.data.get("since") == alarm.since
            for e in self.service.events(release_id=release_id, limit=1000)
        )


# -- Prometheus alarms ----------------------------------------------------------------


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

    def to_dict(self) -> dict[str, Any]:
        value = self.value if self.value is not None and math.isfinite(self.value) else None
        return {"name": self.name, "state": str(self.state), "detail": self.detail, "value": value}


@runtime_checkable
class AlarmSource(Protocol):
    """An outside signal the analysis evaluates every interval."""

    @property
    def name(self) -> str: ...

    def evaluate(self, *, at: float | None = None) -> AlarmEvaluation:
        """The state now, or at Unix time ``at`` (to learn whether it fired before a release)."""
        ...


def _threshold(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _labels(metric: object) -> str:
    if not isinstance(metric, Mapping) or not metric:
        return ""
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()))
    return "{" + inner + "}"


@dataclass(frozen=True, slots=True)
class PrometheusAlarm:
    """Fires when the PromQL ``query`` has a sample above ``above`` (or below ``below``).

    Evaluated with ``GET {prometheus}/api/v1/query``. An instant vector fires
    when any of its samples crosses the threshold, a scalar when it does; no
    samples is OK. An error answer, an unreachable server or a result of
    another type is an ``error`` evaluation (reported, never a rollback).
    """

    name: str
    url: str
    query: str
    above: float | None = None
    below: float | None = None
    timeout: float = 5.0
    transport: httpx.BaseTransport | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        validate_alarm_name(self.name)
        if not isinstance(self.url, str) or not re.fullmatch(r"https?://[^\s/]+(/\S*)?", self.url):
            raise InvalidInput(
                f"alarm {self.name}: prometheus must be the server's URL, like"
                f" http://127.0.0.1:9090, got {self.url!r}"
            )
        object.__setattr__(self, "url", self.url.rstrip("/"))
        if not isinstance(self.query, str) or not self.query.strip():
            raise InvalidInput(f"alarm {self.name}: query must be a PromQL expression")
        if len(self.query) > _MAX_QUERY:
            raise InvalidInput(f"alarm {self.name}: query is longer than {_MAX_QUERY} characters")
        if (self.above is None) == (self.below is None):
            raise InvalidInput(
                f"alarm {self.name}: give exactly one of above or below (the threshold that fires)"
            )
        for what in ("above", "below"):
            value = getattr(self, what)
            if value is not None:
                object.__setattr__(self, what, _threshold(value, f"alarm {self.name}: {what}"))
        timeout = _threshold(self.timeout, f"alarm {self.name}: timeout")
        if not 0 < timeout <= 60:
            raise InvalidInput(f"alarm {self.name}: timeout must be above 0 and at most 60 seconds")
        object.__setattr__(self, "timeout", timeout)

    @classmethod
    def from_spec(
        cls, spec: Mapping[str, Any], *, transport: httpx.BaseTransport | None = None
    ) -> PrometheusAlarm:
        unknown = sorted(str(k) for k in spec if k not in _PROMETHEUS_FIELDS)
        if unknown:
            raise InvalidInput(
                f"unknown field(s) {', '.join(unknown)}; a Prometheus alarm has"
                f" {', '.join(_PROMETHEUS_FIELDS)}"
            )
        missing = [k for k in ("name", "prometheus", "query") if k not in spec]
        if missing:
            raise InvalidInput(
                f"missing {', '.join(missing)}: a Prometheus alarm is"
                ' {"name": "p99", "prometheus": "http://127.0.0.1:9090", "query": "...",'
                ' "above": 0.5}'
            )
        return cls(
            name=spec["name"],
            url=spec["prometheus"],
            query=spec["query"],
            above=spec.get("above"),
            below=spec.get("below"),
            timeout=spec.get("timeout", 5.0),
            transport=transport,
        )

    @property
    def condition(self) -> str:
        return f"> {self.above:g}" if self.above is not None else f"< {self.below:g}"

    def crosses(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value > self.above if self.above is not None else value < (self.below or 0.0)

    def evaluate(self, *, at: float | None = None) -> AlarmEvaluation:
        params = {"query": self.query}
        if at is not None:
            params["time"] = f"{at:.3f}"
        where = f"Prometheus at {self.url}"
        try:
            with httpx.Client(timeout=self.timeout, transport=self.transport) as http:
                r = http.get(f"{self.url}/api/v1/query", params=params)
        except httpx.HTTPError as exc:
            return self._error(f"cannot query {where}: {exc or type(exc).__name__}")
        try:
            answer = r.json()
        except ValueError:
            return self._error(f"{where} answered {r.status_code} with a body that is not JSON")
        if not isinstance(answer, Mapping):
            return self._error(f"{where} answered {r.status_code} with an unexpected body")
        if answer.get("status") != "success":
            error = answer.get("error") or f"status {answer.get('status')!r}"
            kind = answer.get("errorType")
            return self._error(
                f"{where} rejected {self.query!r}: {f'{kind}: ' if kind else ''}{error}"
            )
        try:
            samples = _samples(answer.get("data"))
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            return self._error(f"{where}: {self.query!r} gave {exc}")
        return self._judge(samples)

    def _error(self, detail: str) -> AlarmEvaluation:
        return AlarmEvaluation(self.name, EvaluationState.ERROR, detail)

    def _judge(self, samples: Sequence[tuple[str, float]]) -> AlarmEvaluation:
        if not samples:
            return AlarmEvaluation(
                self.name, EvaluationState.OK, f"{self.query} returned no samples"
            )
        crossing = [(labels, v) for labels, v in samples if self.crosses(v)]
        pick = max if self.above is not None else min
        if crossing:
            labels, value = pick(crossing, key=lambda s: s[1])
            of = f" ({len(crossing)} of {len(samples)} series)" if len(samples) > 1 else ""
            detail = f"{self.query} = {value:g}{labels} {self.condition}{of}"
            return AlarmEvaluation(self.name, EvaluationState.FIRING, detail, value)
        finite = [s for s in samples if not math.isnan(s[1])] or list(samples)
        labels, value = pick(finite, key=lambda s: s[1])
        detail = f"{self.query} = {value:g}{labels}, fires {self.condition}"
        return AlarmEvaluation(self.name, EvaluationState.OK, detail, value)


def _samples(data: object) -> list[tuple[str, float]]:
    if not isinstance(data, Mapping):
        raise ValueError("no data in the answer")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        assert isinstance(result, list)
        return [("", float(result[1]))]
    if kind == "vector":
        if not isinstance(result, list):
            raise ValueError("a vector result that is not a list")
        return [(_labels(item.get("metric")), float(item["value"][1])) for item in result]
    raise ValueError(f"a {kind} result; use a query that gives an instant vector or a scalar")


def parse_alarms(
    spec: object, *, transport: httpx.BaseTransport | None = None
) -> tuple[AlarmSource, ...]:
    """The alarm sources of a release's ``analysis.alarms`` list (none when absent).

    Each item names its kind by its fields: ``prometheus`` (the server's URL)
    with ``query`` is a `PrometheusAlarm`. Anything else raises `InvalidInput`
    (an unknown kind is never guessed).
    """
    if spec is None:
        return ()
    if isinstance(spec, str | bytes) or not isinstance(spec, Sequence):
        raise InvalidInput(
            'alarms must be a list like [{"name": "p99", "prometheus": "http://127.0.0.1:9090",'
            ' "query": "...", "above": 0.5}]'
        )
    out: list[AlarmSource] = []
    for i, item in enumerate(spec, start=1):
        if not isinstance(item, Mapping):
            raise InvalidInput(f"alarms[{i}] must be an object")
        if "prometheus" not in item:
            raise InvalidInput(
                f"alarms[{i}]: unknown kind of alarm: give prometheus (the server's URL) and"
                " query; other alarms are raised over HTTP (POST /v1/alarms)"
            )
        try:
            out.append(PrometheusAlarm.from_spec(item, transport=transport))
        except InvalidInput as exc:
            raise InvalidInput(f"alarms[{i}]: {exc}") from None
    names = [a.name for a in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidInput(f"alarm name(s) used twice: {', '.join(dupes)}")
    return tuple(out)
