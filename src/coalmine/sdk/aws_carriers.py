"""The routing context on AWS messaging: SQS, SNS and EventBridge, sent and received.

Every carrier is a plain attribute or field, readable without coalmine:

===========  =============================================  ===========================
service      where the context and the user key travel      functions
===========  =============================================  ===========================
SQS          String message attributes ``baggage`` (a W3C   ``inject_sqs``
             baggage value) and ``coalmine-user``           ``extract_sqs``
SNS          the same two ``MessageAttributes`` on publish  ``inject_sns``
                                                            ``extract_sns``
EventBridge  the event's ``Detail`` JSON, a top-level       ``inject_eventbridge``
             ``"coalmine": {"baggage": ..., "user": ...}``  ``extract_eventbridge``
===========  =============================================  ===========================

EventBridge has no headers nor message attributes: ``put_events`` takes
``Source``, ``DetailType``, ``Detail`` and a few routing fields, and a rule
delivers only the event, so the one place that reaches every target (Lambda,
SQS, a Step Function, an archive replay) is the detail itself.

``inject_*`` take the keyword arguments of the boto3 call (``send_message``
or ``send_message_batch``; ``publish`` or ``publish_batch``; ``put_events``)
or one entry of a batch, change them in place and return them. The token is
the current scope's (`coalmine.sdk.use`) unless given; with neither a token
nor a user key they change nothing.

``extract_*`` read what a consumer receives: the Lambda event record shapes
(``messageAttributes.baggage.stringValue`` for SQS,
``Sns.MessageAttributes.baggage.Value`` for SNS, ``detail.coalmine`` for
EventBridge), ``receive_message``'s ``MessageAttributes``, and the bodies an
SQS queue gets from a subscription: an SNS notification (raw delivery off;
with raw delivery on, SNS attributes become SQS attributes) or an EventBridge
event (an SQS target). `aws_context` and `aws_user` read whichever shape they
are given. None of them verify the context: that is the decision's job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, MutableMapping
from typing import Any, TypeVar

from coalmine.core.context import BAGGAGE_KEY, find_in_baggage, set_in_baggage
from coalmine.core.errors import InvalidInput
from coalmine.sdk.scope import current_token

__all__ = [
    "BAGGAGE_ATTRIBUTE",
    "DETAIL_FIELD",
    "MAX_MESSAGE_ATTRIBUTES",
    "USER_ATTRIBUTE",
    "aws_context",
    "aws_user",
    "extract_eventbridge",
    "extract_sns",
    "extract_sqs",
    "inject_eventbridge",
    "inject_sns",
    "inject_sqs",
    "message_attributes",
]

BAGGAGE_ATTRIBUTE = "baggage"
"""the message attribute that carries the context (SQS, SNS)"""
USER_ATTRIBUTE = "coalmine-user"
"""the message attribute that carries the user key (same name as the stream header)"""
DETAIL_FIELD = "coalmine"
"""the top-level field of an EventBridge event's detail that carries both"""
MAX_MESSAGE_ATTRIBUTES = 10
"""SQS's limit per message (and SNS's, when it delivers to SQS)"""

P = TypeVar("P", bound=MutableMapping[str, Any])


def _token(token: str | None) -> str | None:
    return token if token is not None else current_token()


def _merged(existing: object, token: str, replace: bool) -> str | None:
    """The new baggage value, or None when there is nothing to change."""
    current = existing if isinstance(existing, str) else None
    if not replace and find_in_baggage(current, BAGGAGE_KEY) is not None:
        return None
    return set_in_baggage(current, token, BAGGAGE_KEY)


def _entries(params: MutableMapping[str, Any], batch_key: str) -> list[MutableMapping[str, Any]]:
    if not isinstance(params, MutableMapping):
        raise InvalidInput(f"expected the boto3 call's parameters as a dict, got {type(params)}")
    if batch_key not in params:
        return [params]
    entries = params[batch_key]
    if not isinstance(entries, list) or not all(isinstance(e, MutableMapping) for e in entries):
        raise InvalidInput(f"{batch_key} must be a list of dicts")
    return entries


def _set_attributes(
    entry: MutableMapping[str, Any], token: str | None, user: str | None, replace: bool
) -> None:
    attrs = entry.get("MessageAttributes")
    if attrs is None:
        attrs = entry["MessageAttributes"] = {}
    if not isinstance(attrs, MutableMapping):
        raise InvalidInput("MessageAttributes must be a dict of name to attribute")
    added: dict[str, str] = {}
    if token is not None:
        existing = attrs.get(BAGGAGE_ATTRIBUTE)
        value = _merged(
            existing.get("StringValue") if isinstance(existing, Mapping) else None, token, replace
        )
        if value is not None:
            added[BAGGAGE_ATTRIBUTE] = value
    if user is not None and (replace or USER_ATTRIBUTE not in attrs):
        added[USER_ATTRIBUTE] = user
    count = len(set(attrs) | set(added))
    if count > MAX_MESSAGE_ATTRIBUTES:
        raise InvalidInput(
            f"a message carries at most {MAX_MESSAGE_ATTRIBUTES} message attributes; the"
            f" routing context needs {', '.join(sorted(set(added) - set(attrs)))} and this"
            f" message already has {len(attrs)}: drop one of them"
        )
    for name, value in added.items():
        attrs[name] = {"DataType": "String", "StringValue": value}


# sending -----------------------------------------------------------------------


def inject_sqs(
    params: P, token: str | None = None, *, user: str | None = None, replace: bool = True
) -> P:
    """Put the context (and ``user``) in SQS message attributes ``baggage`` and ``coalmine-user``.

    ``params`` is ``send_message``'s keyword arguments, ``send_message_batch``'s
    (every entry of ``Entries`` gets them), or one entry. An existing
    ``baggage`` attribute keeps its other members. Raises InvalidInput when a
    message would pass SQS's limit of 10 message attributes.
    """
    token = _token(token)
    if token is None and user is None:
        return params
    for entry in _entries(params, "Entries"):
        _set_attributes(entry, token, user, replace)
    return params


def inject_sns(
    params: P, token: str | None = None, *, user: str | None = None, replace: bool = True
) -> P:
    """Put the context (and ``user``) in SNS message attributes (DataType String).

    ``params`` is ``publish``'s keyword arguments, ``publish_batch``'s (every
    entry of ``PublishBatchRequestEntries``), or one entry. SNS hands them to
    Lambda as ``Sns.MessageAttributes``, and to SQS either inside the
    notification JSON (raw delivery off) or as SQS message attributes (on).
    """
    token = _token(token)
    if token is None and user is None:
        return params
    for entry in _entries(params, "PublishBatchRequestEntries"):
        _set_attributes(entry, token, user, replace)
    return params


def inject_eventbridge(
    params: P, token: str | None = None, *, user: str | None = None, replace: bool = True
) -> P:
    """Put ``"coalmine": {"baggage": ..., "user": ...}`` at the top of each entry's ``Detail``.

    ``params`` is ``put_events``' keyword arguments (every entry of
    ``Entries``) or one entry. ``Detail`` is a JSON object as a string (a
    missing one becomes ``{}``); anything else raises InvalidInput.
    """
    token = _token(token)
    if token is None and user is None:
        return params
    for entry in _entries(params, "Entries"):
        raw = entry.get("Detail", "{}")
        try:
            detail = json.loads(raw) if isinstance(raw, str | bytes) else None
        except ValueError:
            detail = None
        if not isinstance(detail, dict):
            raise InvalidInput("an EventBridge entry's Detail must be a JSON object (a string)")
        ours = detail.get(DETAIL_FIELD)
        field: dict[str, Any] = dict(ours) if isinstance(ours, Mapping) else {}
        if token is not None:
            value = _merged(field.get("baggage"), token, replace)
            if value is not None:
                field["baggage"] = value
        if user is not None and (replace or not field.get("user")):
            field["user"] = user
        detail[DETAIL_FIELD] = field
        entry["Detail"] = json.dumps(detail, separators=(",", ":"), ensure_ascii=False)
    return params


# receiving ---------------------------------------------------------------------


def message_attributes(message: Mapping[str, Any]) -> dict[str, str]:
    """The String message attributes of an SQS or SNS message, in any of their shapes.

    Lambda's SQS record (``messageAttributes`` / ``stringValue``),
    ``receive_message``'s (``MessageAttributes`` / ``StringValue``), and an SNS
    notification's or Lambda SNS record's (``MessageAttributes`` / ``Value``).
    """
    out: dict[str, str] = {}
    for key in ("messageAttributes", "MessageAttributes"):
        attrs = message.get(key)
        if not isinstance(attrs, Mapping):
            continue
        for name, attr in attrs.items():
            if not isinstance(name, str) or not isinstance(attr, Mapping):
                continue
            for field in ("stringValue", "StringValue", "Value"):
                value = attr.get(field)
                if isinstance(value, str):
                    out[name] = value
                    break
    return out


def _attribute(attrs: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in attrs.items():
        if key.lower() == wanted and value:
            return value
    return None


def _json_object(data: object) -> dict[str, Any] | None:
    if isinstance(data, Mapping):
        return dict(data)
    if not isinstance(data, str | bytes) or data.lstrip()[:1] not in ("{", b"{"):
        return None
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def _is_sns_notification(doc: Mapping[str, Any]) -> bool:
    return doc.get("Type") == "Notification" and "TopicArn" in doc


def _is_eventbridge_event(doc: Mapping[str, Any]) -> bool:
    return "detail-type" in doc and "detail" in doc


def _detail_field(event: Mapping[str, Any]) -> Mapping[str, Any] | None:
    detail = event.get("detail")
    ours = detail.get(DETAIL_FIELD) if isinstance(detail, Mapping) else None
    return ours if isinstance(ours, Mapping) else None


def _sqs_body(message: Mapping[str, Any]) -> dict[str, Any] | None:
    """An SNS notification or EventBridge event carried in an SQS body, else None."""
    for key in ("body", "Body"):
        doc = _json_object(message.get(key))
        if doc is not None and (_is_sns_notification(doc) or _is_eventbridge_event(doc)):
            return doc
    return None


def extract_sqs(message: Mapping[str, Any] | None) -> str | None:
    """The context of an SQS message: its ``baggage`` attribute, else its body's carrier."""
    if not isinstance(message, Mapping):
        return None
    token = find_in_baggage(_attribute(message_attributes(message), BAGGAGE_ATTRIBUTE))
    if token is not None:
        return token
    inner = _sqs_body(message)
    if inner is None:
        return None
    return extract_eventbridge(inner) if _is_eventbridge_event(inner) else extract_sns(inner)


def extract_sns(message: Mapping[str, Any] | str | None) -> str | None:
    """The context of an SNS message: a Lambda SNS record, or a notification (dict or JSON)."""
    doc = _json_object(message)
    if doc is None:
        return None
    sns = doc.get("Sns")
    source = sns if isinstance(sns, Mapping) else doc
    return find_in_baggage(_attribute(message_attributes(source), BAGGAGE_ATTRIBUTE))


def extract_eventbridge(event: Mapping[str, Any] | str | None) -> str | None:
    """The context of an EventBridge event (dict or JSON): ``detail.coalmine.baggage``."""
    doc = _json_object(event)
    ours = _detail_field(doc) if doc is not None else None
    baggage = ours.get("baggage") if ours is not None else None
    return find_in_baggage(baggage) if isinstance(baggage, str) else None


def _kind(item: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """Which carrier ``item`` is (``sqs``, ``sns``, ``eventbridge``) and the part that holds it."""
    sns = item.get("Sns")
    if isinstance(sns, Mapping):
        return "sns", sns
    if _is_eventbridge_event(item):
        return "eventbridge", item
    if _is_sns_notification(item):
        return "sns", item
    if any(k in item for k in ("messageAttributes", "MessageAttributes", "body", "Body")):
        return "sqs", item
    return None


def aws_context(item: object) -> str | None:
    """The context of an SQS, SNS or EventBridge message or event, whichever it is; else None."""
    if not isinstance(item, Mapping):
        return None
    kind = _kind(item)
    if kind is None:
        return None
    if kind[0] == "eventbridge":
        return extract_eventbridge(item)
    if kind[0] == "sns":
        return extract_sns(kind[1])
    return extract_sqs(item)


def aws_user(item: object, name: str | None = None) -> str | None:
    """The user key of an SQS, SNS or EventBridge message or event, else None.

    ``name`` is a message attribute (SQS, SNS) or a key of the event's detail
    (EventBridge); by default coalmine's own: the ``coalmine-user`` attribute,
    or ``detail.coalmine.user``. An SQS body holding an SNS notification or
    an EventBridge event is read the same way.
    """
    if not isinstance(item, Mapping):
        return None
    kind = _kind(item)
    if kind is None:
        return None
    what, part = kind
    if what == "sqs":
        found = _attribute(message_attributes(part), name or USER_ATTRIBUTE)
        inner = _sqs_body(part) if found is None else None
        return found if inner is None else aws_user(inner, name)
    if what == "sns":
        return _attribute(message_attributes(part), name or USER_ATTRIBUTE)
    if name is not None:
        detail = part.get("detail")
        value = detail.get(name) if isinstance(detail, Mapping) else None
    else:
        ours = _detail_field(part)
        value = ours.get("user") if ours is not None else None
    return value if isinstance(value, str) and value else None
