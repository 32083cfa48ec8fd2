"""Reading a consumed record as coalmine wrote it: its context, user key and payload.

A record published with `coalmine.sdk.publish` carries

* on a broker with headers: the context in ``baggage``, the user key in
  ``coalmine-user``, the payload's type in ``content-type``;
* on a broker without (Kinesis): the envelope of `coalmine.sdk.envelope`,
  with the user key in its ``user`` field.

`view` reads either (and records from producers without coalmine: no
context, the record key as user key, the data as it is); `dispatch` routes by
it. `kinesis_event_records` turns a Lambda Kinesis event into records.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from coalmine.core.ports import Record
from coalmine.sdk.carriers import extract_message
from coalmine.sdk.envelope import ENVELOPE_VERSION, unwrap
from coalmine.sdk.publish import CONTENT_TYPE_HEADER, USER_FIELD, USER_HEADER

__all__ = ["RecordView", "kinesis_event_records", "read_record", "view"]

_ENVELOPE_START = b'{"coalmine":'
_NO_KEY = "coalmine-no-key"
"""coalmine.integrations.kinesis.NO_KEY (not imported: the SDK loads no adapter)"""


@dataclass(frozen=True, slots=True)
class RecordView:
    """A record's routing context (token), user key, and its payload, decoded on demand."""

    token: str | None
    user: str | None
    payload: Callable[[], Any]
    """decodes the payload; raises ValueError when it does not decode"""


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        for k, v in headers.items():
            if k.lower() == name:
                return v
    return value


def _decoded(data: bytes, content_type: str | None) -> Callable[[], Any]:
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind == "application/json" or kind.endswith("+json"):
        return lambda: json.loads(data)
    if kind.startswith("text/"):
        return lambda: data.decode("utf-8")
    return lambda: data


def _envelope_user(data: bytes) -> str | None:
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if isinstance(doc, dict) and doc.get("coalmine") == ENVELOPE_VERSION:
        user = doc.get(USER_FIELD)
        return user if isinstance(user, str) and user else None
    return None


def _envelope(record: Record) -> RecordView:
    payload, token = unwrap(record.data)
    user = _envelope_user(record.data) if token is None else None
    return RecordView(token, user or record.key, lambda: payload)


def view(record: Record) -> RecordView:
    """How `dispatch` reads a record.

    With headers: the ``baggage`` header's coalmine member, the
    ``coalmine-user`` header (else the record key), and the data decoded by
    its ``content-type`` (JSON, text, else bytes). Without headers (or with
    headers but no context and data that is an envelope, as when records are
    bridged from Kinesis): the envelope's context, ``user`` (else the record
    key) and payload; data that is not an envelope is the payload as it is.
    """
    if record.headers is None:
        return _envelope(record)
    headers = record.headers
    token = extract_message(headers)
    if token is None and record.data.startswith(_ENVELOPE_START):
        return _envelope(record)
    user = _header(headers, USER_HEADER)
    return RecordView(
        token, user or record.key, _decoded(record.data, _header(headers, CONTENT_TYPE_HEADER))
    )


def read_record(record: Record) -> tuple[str | None, str | None, Any]:
    """``(token, user_key, payload)`` of a record; ValueError for a payload that does not decode."""
    v = view(record)
    return v.token, v.user, v.payload()


def kinesis_event_records(event: Mapping[str, Any]) -> list[Record]:
    """The records of a Lambda Kinesis event (``{"Records": [{"kinesis": ...}]}``), to dispatch.

    The partition is the shard (from ``eventID``, ``shardId-...:<sequence>``),
    the sequence is ``kinesis.sequenceNumber`` (what a partial batch response
    names), the data is ``kinesis.data`` decoded from base64. Raises
    ValueError for an event that is not a Kinesis batch.
    """
    items = event.get("Records") if isinstance(event, Mapping) else None
    if not isinstance(items, list):
        raise ValueError("not a batch event: no 'Records' list")
    out = []
    for item in items:
        kinesis = item.get("kinesis") if isinstance(item, Mapping) else None
        if not isinstance(kinesis, Mapping):
            raise ValueError("not a Kinesis record: no 'kinesis' object")
        arn = str(item.get("eventSourceARN", ""))
        key = kinesis.get("partitionKey")
        out.append(
            Record(
                arn.rpartition("/")[2] or arn,
                str(item.get("eventID", "")).partition(":")[0],
                str(kinesis["sequenceNumber"]),
                base64.b64decode(kinesis["data"]),
                None,
                None if key in (None, _NO_KEY) else str(key),
            )
        )
    return out
