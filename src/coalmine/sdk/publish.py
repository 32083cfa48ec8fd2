"""Publish an event with the routing context, so the consumer runs the producer's channel.

`publish(stream, topic, payload, key=user)` is the stream hop's
``inject_http``: the signed context of the current scope (or ``token``) goes

* in the ``baggage`` header (`coalmine.sdk.carriers`) where the broker has
  headers (NATS, Redis Streams, the in-memory stream), with the user key in
  ``coalmine-user`` and the payload's type in ``content-type``;
* in the envelope (`coalmine.sdk.envelope`) where it has none (Kinesis), with
  the user key in the envelope's ``user`` field::

      {"coalmine":1,"baggage":"coalmine=<token>","user":"u-42","payload":{...}}

Either way a consumer that does not use coalmine can still read the record:
headers are ignored by those who do not look, and the envelope is plain JSON.
The key is also the record's partition key, so one user's events stay in
order. A dict or list payload is sent as JSON, a str as UTF-8 text, bytes as
they are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from coalmine.core.ports import Stream
from coalmine.sdk.carriers import inject_message
from coalmine.sdk.envelope import Payload, wrap
from coalmine.sdk.scope import current_token

__all__ = [
    "CONTENT_TYPE_HEADER",
    "JSON_CONTENT_TYPE",
    "TEXT_CONTENT_TYPE",
    "USER_FIELD",
    "USER_HEADER",
    "encode_payload",
    "publish",
]

USER_HEADER = "coalmine-user"
"""the header that carries the user key, to route a record that has no context"""
USER_FIELD = "user"
"""the envelope field that carries the user key"""
CONTENT_TYPE_HEADER = "content-type"
JSON_CONTENT_TYPE = "application/json"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"


def encode_payload(payload: Payload) -> tuple[bytes, str | None]:
    """The bytes of ``payload`` and their content type (None for bytes)."""
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload), None
    if isinstance(payload, str):
        return payload.encode("utf-8"), TEXT_CONTENT_TYPE
    if isinstance(payload, dict | list):
        try:
            text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"the payload is not JSON-serialisable: {exc}") from exc
        return text.encode("utf-8"), JSON_CONTENT_TYPE
    raise TypeError(
        f"cannot publish a {type(payload).__name__}: give bytes, a str, a dict or a list"
    )


def _with_user(envelope: bytes, user: str) -> bytes:
    doc: dict[str, Any] = json.loads(envelope)
    payload = doc.pop("payload")
    doc[USER_FIELD] = user
    doc["payload"] = payload
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def publish(
    stream: Stream,
    topic: str,
    payload: Payload,
    *,
    key: str | None = None,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> str:
    """Publish ``payload`` to ``topic`` with the routing context; return its sequence.

    ``token`` defaults to the current scope's (`coalmine.sdk.use`); with none
    the record carries no context (its consumer then decides by ``key``).
    ``key`` is the user key: the partition key, and the ``coalmine-user``
    header (or envelope field). ``headers`` are extra headers, refused
    (ValueError) by a broker without headers.
    """
    token = token if token is not None else current_token()
    if stream.supports_headers:
        data, content_type = encode_payload(payload)
        sent: dict[str, str] = dict(headers or {})
        if content_type is not None:
            sent.setdefault(CONTENT_TYPE_HEADER, content_type)
        if key is not None:
            sent[USER_HEADER] = key
        if token is not None:
            inject_message(sent, token)
        return stream.publish(topic, data, key=key, headers=sent)
    if headers:
        raise ValueError(
            f"this stream has no record headers: cannot send {', '.join(sorted(headers))}"
            " (the routing context and user key go in the envelope)"
        )
    data = wrap(payload, token)
    if key is not None:
        data = _with_user(data, key)
    return stream.publish(topic, data, key=key)
