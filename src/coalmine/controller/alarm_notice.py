"""HTTP-raised alarms: the two body shapes ``POST /v1/alarms`` reads.

A simple body ``{"app", "name", "state", "reason"}``, or a CloudWatch alarm's
SNS notification (as an SNS HTTP subscription or a Lambda receives it); the
app is the ``?app=`` query parameter, the simple body's ``app``, or the
alarm name's convention ``coalmine:<app>:<name>``. `parse_notice` reads
either into an `AlarmNotice`; `coalmine.controller.alarms.AlarmService`
stores it and applies the fix-forward rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coalmine.core.alarms import parse_state, validate_alarm_name
from coalmine.core.errors import InvalidInput
from coalmine.core.model import validate_name
from coalmine.core.records import AlarmState
from coalmine.core.text import check_text
from coalmine.core.wire import load_json

__all__ = ["ALARM_NAME_PREFIX", "AlarmNotice", "parse_notice"]

ALARM_NAME_PREFIX = "coalmine:"
"""An alarm named ``coalmine:<app>:<name>`` belongs to ``<app>`` (no ``?app=`` needed)."""
_MAX_REASON = 2000
_SIMPLE_FIELDS = ("app", "name", "state", "reason")


def _reason(value: object, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, got {type(value).__name__}")
    text = check_text(" ".join(value.split()), what)  # one line: it ends up in an event message
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


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
        return load_json(body, "the body")
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
        message = load_json(message, "the SNS Message")
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
