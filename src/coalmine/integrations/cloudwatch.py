"""CloudWatch alarms as an alarm source: the release's alarms, read with DescribeAlarms.

A release's analysis settings may list them (``"alarms": [{"name": "errors",
"cloudwatch": "place-order-errors"}]``, see
``coalmine.controller.analysis_settings``); the value is the CloudWatch
alarm's name or ARN (an ARN's region is used; else the region of the AWS
configuration chain). `CloudWatchAlarm` implements the
`coalmine.core.ports.AlarmSource` port:

* state: ``ALARM`` is firing; ``OK`` and ``INSUFFICIENT_DATA`` are OK; an
  alarm that does not exist or cannot be read is an ``error`` evaluation
  (reported, never a rollback);
* since when: ``StateTransitionedTimestamp`` (``StateUpdatedTimestamp``
  where AWS does not give it), so the fix-forward rule
  (`coalmine.core.alarms.attributable`) needs no second call;
* whom it blames: the alarm's metric dimensions against the release
  (`coalmine.core.attribution.attribute`); only an alarm that names the
  candidate rolls back on its own.

The alarms of one release share a `CloudWatchAlarmReader` per region: the
first alarm evaluated in an interval reads all of them in one DescribeAlarms
call (up to 100 names a call), the others use that answer.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from coalmine._extras import require
from coalmine.core.alarms import AlarmEvaluation, EvaluationState, validate_alarm_name, when
from coalmine.core.attribution import AlarmMetric, Attribution, Blame, ReleaseScope, attribute
from coalmine.core.errors import InvalidInput

__all__ = [
    "CLOUDWATCH_FIELDS",
    "CloudWatchAlarm",
    "CloudWatchAlarmReader",
    "CloudWatchUnavailable",
    "alarm_metrics",
    "cloudwatch_client",
]

CLOUDWATCH_FIELDS = ("name", "cloudwatch")
_NAMES_PER_CALL = 100  # DescribeAlarms' limit on AlarmNames
_MAX_REASON = 200
_ARN = re.compile(r"arn:aws[a-z-]*:cloudwatch:([a-z0-9-]+):\d{12}:alarm:(.+)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def cloudwatch_client(region: str | None = None) -> Any:
    """A boto3 CloudWatch client from the standard configuration chain (``region`` if given).

    Short timeouts: a controller tick waits for it.
    """
    boto3 = require("boto3", "aws")
    config = require("botocore.config", "aws").Config(
        connect_timeout=5, read_timeout=10, retries={"max_attempts": 3, "mode": "standard"}
    )
    return boto3.client("cloudwatch", region_name=region, config=config)


class CloudWatchUnavailable(Exception):
    """CloudWatch could not be read (the message says why)."""


class CloudWatchAlarmReader:
    """The states of a set of CloudWatch alarms of one region, read together.

    `read` answers from the last DescribeAlarms answer while it is fresh: an
    alarm asked for a second time, or an answer older than ``max_age``
    seconds, makes the next call. So the alarms of one analysis run cost one
    call, and no run sees another run's answer. Thread-safe.
    """

    def __init__(
        self,
        region: str | None = None,
        *,
        client: Any = None,
        clock: Callable[[], float] = time.monotonic,
        max_age: float = 30.0,
    ) -> None:
        self.region = region
        self._client = client
        self._clock = clock
        self._max_age = max_age
        self._lock = threading.Lock()
        self._names: dict[str, None] = {}
        self._answer: dict[str, Mapping[str, Any]] = {}
        self._error: str | None = None
        self._read: set[str] = set()
        self._at: float | None = None
        self.calls = 0
        """DescribeAlarms calls made, for tests"""

    def watch(self, alarm: str) -> None:
        """Add ``alarm`` to the names every call reads."""
        with self._lock:
            self._names[alarm] = None

    def read(self, alarm: str) -> Mapping[str, Any] | None:
        """DescribeAlarms' entry for ``alarm``, or None when there is no such alarm.

        Raises `CloudWatchUnavailable` when CloudWatch cannot be read.
        """
        with self._lock:
            self._names[alarm] = None
            now = self._clock()
            stale = self._at is None or now - self._at > self._max_age or alarm in self._read
            if stale:
                self._fetch()
                self._at = now
                self._read = set()
            self._read.add(alarm)
            if self._error is not None:
                raise CloudWatchUnavailable(self._error)
            return self._answer.get(alarm)

    def _fetch(self) -> None:
        names = list(self._names)
        answer: dict[str, Mapping[str, Any]] = {}
        self._error = None
        try:
            if self._client is None:
                self._client = cloudwatch_client(self.region)
            for i in range(0, len(names), _NAMES_PER_CALL):
                chunk = names[i : i + _NAMES_PER_CALL]
                kwargs: dict[str, Any] = {
                    "AlarmNames": chunk,
                    "AlarmTypes": ["MetricAlarm", "CompositeAlarm"],
                }
                while True:
                    self.calls += 1
                    page = self._client.describe_alarms(**kwargs)
                    for item in [*page.get("MetricAlarms", []), *page.get("CompositeAlarms", [])]:
                        answer[str(item["AlarmName"])] = item
                    token = page.get("NextToken")
                    if not token:
                        break
                    kwargs["NextToken"] = token
        except Exception as exc:  # boto3's errors, no credentials, a missing extra
            where = f" in {self.region}" if self.region else ""
            self._error = f"DescribeAlarms{where} failed: {exc or type(exc).__name__}"
            return
        self._answer = answer


def alarm_metrics(alarm: Mapping[str, Any]) -> list[AlarmMetric]:
    """The metrics a DescribeAlarms entry watches: its one metric, or each ``MetricStat``
    of its metric-math queries (none for a composite alarm or a pure expression)."""
    out: list[AlarmMetric] = []
    if alarm.get("MetricName"):
        out.append(
            AlarmMetric(
                str(alarm.get("Namespace", "")),
                str(alarm["MetricName"]),
                _dimensions(alarm.get("Dimensions")),
            )
        )
    for query in alarm.get("Metrics") or ():
        metric = (query.get("MetricStat") or {}).get("Metric")
        if metric:
            out.append(
                AlarmMetric(
                    str(metric.get("Namespace", "")),
                    str(metric.get("MetricName", "")),
                    _dimensions(metric.get("Dimensions")),
                )
            )
    return out


def _dimensions(items: object) -> dict[str, str]:
    if not isinstance(items, Sequence):
        return {}
    return {str(d["Name"]): str(d["Value"]) for d in items if isinstance(d, Mapping)}


def _timestamp(value: object) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    return None


def _reason(text: object) -> str:
    reason = " ".join(str(text or "").split())
    return reason if len(reason) <= _MAX_REASON else reason[: _MAX_REASON - 1] + "…"


@dataclass(frozen=True, slots=True)
class CloudWatchAlarm:
    """Fires while the CloudWatch alarm ``alarm`` is in ALARM; blames by its dimensions.

    ``scope`` is the release the alarm is evaluated for (the analysis step
    gives it); without one a firing alarm blames no version (`Blame.SHARED`).
    """

    name: str
    alarm: str
    reader: CloudWatchAlarmReader = field(compare=False, repr=False)
    scope: ReleaseScope | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        validate_alarm_name(self.name)
        self.reader.watch(self.alarm)

    @staticmethod
    def locate(value: object, name: str) -> tuple[str | None, str]:
        """(region, alarm name) of a ``cloudwatch`` value: a name, or an alarm ARN."""
        if (
            not isinstance(value, str)
            or not 1 <= len(value) <= 1600
            or _CONTROL.search(value)
            or value != value.strip()
        ):
            raise InvalidInput(
                f"alarm {name}: cloudwatch must be the CloudWatch alarm's name or ARN"
                f" (1-255 printable characters), got {value!r}"
            )
        m = _ARN.fullmatch(value)
        if m is not None:
            return m.group(1), m.group(2)
        if value.startswith("arn:"):
            raise InvalidInput(
                f"alarm {name}: {value!r} is not a CloudWatch alarm ARN"
                " (arn:aws:cloudwatch:REGION:ACCOUNT:alarm:NAME); or give the alarm's name"
            )
        if len(value) > 255:
            raise InvalidInput(f"alarm {name}: a CloudWatch alarm name has at most 255 characters")
        return None, value

    @classmethod
    def from_spec(
        cls,
        spec: Mapping[str, Any],
        *,
        readers: dict[str | None, CloudWatchAlarmReader] | None = None,
        scope: ReleaseScope | None = None,
    ) -> CloudWatchAlarm:
        """Read ``{"name": ..., "cloudwatch": ...}``; ``readers`` (by region) are shared by the
        alarms of one release, so they are read in one call."""
        unknown = sorted(str(k) for k in spec if k not in CLOUDWATCH_FIELDS)
        if unknown:
            raise InvalidInput(
                f"unknown field(s) {', '.join(unknown)}; a CloudWatch alarm has"
                f" {', '.join(CLOUDWATCH_FIELDS)}"
            )
        if "name" not in spec:
            raise InvalidInput(
                'missing name: a CloudWatch alarm is {"name": "errors", "cloudwatch":'
                ' "place-order-errors"}'
            )
        name = validate_alarm_name(spec["name"])
        region, alarm = cls.locate(spec["cloudwatch"], name)
        readers = readers if readers is not None else {}
        reader = readers.get(region)
        if reader is None:
            reader = readers[region] = CloudWatchAlarmReader(region)
        return cls(name, alarm, reader, scope)

    def evaluate(self, *, at: float | None = None) -> AlarmEvaluation:
        try:
            found = self.reader.read(self.alarm)
        except CloudWatchUnavailable as exc:
            return self._error(f"cannot read CloudWatch alarm {self.alarm}: {exc}")
        if found is None:
            where = f" in {self.reader.region}" if self.reader.region else ""
            return self._error(f"there is no CloudWatch alarm named {self.alarm}{where}")
        state = str(found.get("StateValue", ""))
        since = _timestamp(
            found.get("StateTransitionedTimestamp") or found.get("StateUpdatedTimestamp")
        )
        if state not in ("ALARM", "OK", "INSUFFICIENT_DATA") or since is None:
            return self._error(f"CloudWatch alarm {self.alarm} has state {state!r} and no time")
        phrase = "in ALARM" if state == "ALARM" else state
        head = f"CloudWatch alarm {self.alarm} is {phrase} since {when(since)}"
        if at is not None and at < since:
            # the current state began after ``at``; what came before, DescribeAlarms does not say
            if state == "ALARM":
                detail = f"{head}, so it was not in this ALARM at {when(at)}"
                return AlarmEvaluation(self.name, EvaluationState.OK, detail, since=since)
            return self._error(f"{head}: its state at {when(at)} is not known")
        if state != "ALARM":
            return AlarmEvaluation(self.name, EvaluationState.OK, head, since=since)
        blame = self._attribution(found)
        why = _reason(found.get("StateReason"))
        detail = f"{head}{f' ({why})' if why else ''}; {blame.reason}"
        return AlarmEvaluation(
            self.name, EvaluationState.FIRING, detail, since=since, blame=blame.blame
        )

    def _attribution(self, found: Mapping[str, Any]) -> Attribution:
        if self.scope is None:
            return Attribution(Blame.SHARED, "no release to attribute it to")
        return attribute(alarm_metrics(found), self.scope)

    def _error(self, detail: str) -> AlarmEvaluation:
        return AlarmEvaluation(self.name, EvaluationState.ERROR, detail)
