"""An envelope that carries the routing context through header-less streams (Kinesis).

A Kinesis record is only bytes, so the context travels inside it::

    {"coalmine": 1, "baggage": "coalmine=<token>", "payload": <payload>}

``payload`` is the payload itself when it is JSON (a dict, a list or a
str); bytes are carried as ``{"base64": "<standard base64>"}`` and the
envelope then says ``"encoding": "base64"``. ``baggage`` is a W3C baggage
value, absent when there is no context. A consumer that does not use
coalmine reads the envelope as plain JSON; `unwrap` passes data that is not
an envelope through unchanged.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from coalmine.core.context import BAGGAGE_KEY, find_in_baggage, set_in_baggage
from coalmine.sdk.scope import current_token

__all__ = ["ENVELOPE_VERSION", "Payload", "is_envelope", "unwrap", "wrap"]

ENVELOPE_VERSION = 1
Payload = bytes | str | dict[str, Any] | list[Any]


def wrap(payload: Payload, token: str | None = None) -> bytes:
    """The envelope (UTF-8 JSON) around ``payload``, with ``token`` or the current scope's.

    Raises TypeError for a dict or list that is not JSON-serialisable.
    """
    token = token if token is not None else current_token()
    envelope: dict[str, Any] = {"coalmine": ENVELOPE_VERSION}
    if token is not None:
        envelope["baggage"] = set_in_baggage(None, token, BAGGAGE_KEY)
    if isinstance(payload, bytes | bytearray | memoryview):
        envelope["encoding"] = "base64"
        envelope["payload"] = {"base64": base64.b64encode(bytes(payload)).decode("ascii")}
    elif isinstance(payload, str | dict | list):
        envelope["payload"] = payload
    else:
        raise TypeError(
            f"cannot wrap a {type(payload).__name__}: give bytes, a str, a dict or a list"
        )
    try:
        return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the payload is not JSON-serialisable: {exc}") from exc


def _parse(data: bytes | str) -> dict[str, Any] | None:
    text = data.lstrip()[:1]
    if text not in (b"{", "{"):
        return None
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if (
        not isinstance(doc, dict)
        or doc.get("coalmine") != ENVELOPE_VERSION
        or isinstance(doc.get("coalmine"), bool)
        or "payload" not in doc
    ):
        return None
    return doc


def _open(data: bytes | str) -> tuple[Any, str | None] | None:
    doc = _parse(data)
    if doc is None:
        return None
    baggage = doc.get("baggage")
    token = find_in_baggage(baggage, BAGGAGE_KEY) if isinstance(baggage, str) else None
    payload = doc["payload"]
    if doc.get("encoding") == "base64":
        try:
            return base64.b64decode(payload["base64"], validate=True), token
        except (KeyError, TypeError, binascii.Error):
            return None
    return payload, token


def is_envelope(data: bytes | str) -> bool:
    """Whether `unwrap` would open ``data`` (rather than pass it through)."""
    return _open(data) is not None


def unwrap(data: bytes | str) -> tuple[Any, str | None]:
    """``(payload, token)`` of an envelope; ``(data, None)`` for anything else.

    Never raises: a record that is not an envelope (or a malformed one) comes
    back unchanged, so a consumer can read producers with and without
    coalmine alike.
    """
    opened = _open(data)
    return opened if opened is not None else (data, None)
