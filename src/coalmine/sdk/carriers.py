"""Put the signed routing context on the wire, and read it back, per carrier.

The context always travels as the ``coalmine`` member of a W3C ``baggage``
value, so it rides next to the application's own baggage members (which are
kept) and through anything that already forwards baggage (OpenTelemetry).

=================  ===========================================  ==================
carrier            shape                                        functions
=================  ===========================================  ==================
HTTP               a header mapping, or a list of (name, value) ``inject_http``
                   pairs (str or bytes, as ASGI); names are     ``extract_http``
                   case-insensitive
message headers    a dict: NATS headers, RabbitMQ (pika)        ``inject_message``
                   ``properties.headers``, Redis Streams fields ``extract_message``
Kafka              a list of ``(key, bytes)`` headers           ``inject_kafka``
                                                                ``extract_kafka``
=================  ===========================================  ==================

Every ``inject_*`` takes the token explicitly or, by default, the current
scope's (`coalmine.sdk.use`); with no token it changes nothing. Every
``extract_*`` returns the coalmine member's value (to pass to
`Client.decide`) or None. None of them verify anything: verification is the
routing decision's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TypeVar, overload

from coalmine.core.context import BAGGAGE_KEY, find_in_baggage, set_in_baggage
from coalmine.sdk.scope import current_token

__all__ = [
    "HEADER",
    "extract_http",
    "extract_kafka",
    "extract_message",
    "inject_http",
    "inject_kafka",
    "inject_message",
]

HEADER = "baggage"
"""the header (or message header, or stream field) that carries the context"""

_HEADER_B = HEADER.encode()

M = TypeVar("M", bound=MutableMapping[Any, Any])
H = TypeVar("H", bound=MutableMapping[str, str] | list[tuple[str, str]] | list[tuple[bytes, bytes]])


def _text(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _is_baggage(name: object) -> bool:
    if isinstance(name, str):
        return name.lower() == HEADER
    if isinstance(name, bytes):
        return name.lower() == _HEADER_B
    return False


def _join(values: Iterable[object]) -> str | None:
    parts = [_text(v) for v in values if v is not None]
    return ",".join(parts) if parts else None


def _merged(existing: str | None, token: str, replace: bool) -> str | None:
    """The new baggage value, or None when there is nothing to change."""
    if not replace and find_in_baggage(existing, BAGGAGE_KEY) is not None:
        return None
    return set_in_baggage(existing, token, BAGGAGE_KEY)


# HTTP ----------------------------------------------------------------------


def inject_http(headers: H, token: str | None = None, *, replace: bool = True) -> H:
    """Set the coalmine member of the ``baggage`` header, keeping the other members.

    ``headers`` is a mutable mapping (a dict, ``httpx.Headers``, ``requests``'
    headers) or a list of ``(name, value)`` pairs, changed in place and
    returned. Several ``baggage`` headers are merged into one. With
    ``replace=False`` a coalmine member already present is left alone.
    """
    token = token if token is not None else current_token()
    if token is None:
        return headers
    if isinstance(headers, list):
        _inject_pairs(headers, token, replace)
        return headers
    names = [k for k in list(headers.keys()) if _is_baggage(k)]
    existing = _join(headers[k] for k in names)
    value = _merged(existing, token, replace)
    if value is None:
        return headers
    for k in names[1:]:
        del headers[k]
    headers[names[0] if names else HEADER] = value
    return headers


def _inject_pairs(pairs: list[Any], token: str, replace: bool) -> None:
    at = [i for i, (k, _) in enumerate(pairs) if _is_baggage(k)]
    value = _merged(_join(pairs[i][1] for i in at), token, replace)
    if value is None:
        return
    if at:
        name = pairs[at[0]][0]
    else:
        name = _HEADER_B if pairs and isinstance(pairs[0][0], bytes) else HEADER
    pair = (name, value.encode("latin-1", "replace")) if isinstance(name, bytes) else (name, value)
    for i in reversed(at):
        del pairs[i]
    pairs.insert(at[0] if at else len(pairs), pair)


def extract_http(headers: Mapping[str, str] | Iterable[tuple[Any, Any]] | None) -> str | None:
    """The coalmine member of the ``baggage`` header(s), or None."""
    if not headers:
        return None
    if isinstance(headers, Mapping):
        values: list[object] = [headers[k] for k in headers if _is_baggage(k)]
    else:
        values = [v for k, v in headers if _is_baggage(k)]
    return find_in_baggage(_join(values), BAGGAGE_KEY)


# message headers -----------------------------------------------------------


@overload
def inject_message(
    headers: None = None, token: str | None = None, *, replace: bool = True
) -> dict[str, Any]: ...
@overload
def inject_message(headers: M, token: str | None = None, *, replace: bool = True) -> M: ...
def inject_message(
    headers: MutableMapping[Any, Any] | None = None,
    token: str | None = None,
    *,
    replace: bool = True,
) -> MutableMapping[Any, Any]:
    """Set the context in a message's headers dict (NATS, RabbitMQ, Redis Streams fields).

    Changes ``headers`` in place (a new dict when None) and returns it. The
    entry is ``baggage``; an existing one (str or bytes, any case) keeps its
    other members and its type.
    """
    out: MutableMapping[Any, Any] = headers if headers is not None else {}
    token = token if token is not None else current_token()
    if token is None:
        return out
    names = [k for k in list(out.keys()) if _is_baggage(k)]
    value = _merged(_join(out[k] for k in names), token, replace)
    if value is None:
        return out
    was_bytes = bool(names) and isinstance(out[names[0]], bytes)
    for k in names[1:]:
        del out[k]
    out[names[0] if names else HEADER] = value.encode() if was_bytes else value
    return out


def extract_message(headers: Mapping[Any, Any] | None) -> str | None:
    """The coalmine member of a message's ``baggage`` header or field, or None."""
    if not headers:
        return None
    return find_in_baggage(_join(headers[k] for k in headers if _is_baggage(k)), BAGGAGE_KEY)


# Kafka ---------------------------------------------------------------------


def inject_kafka(
    headers: list[tuple[str, bytes]] | None = None,
    token: str | None = None,
    *,
    replace: bool = True,
) -> list[tuple[str, bytes]]:
    """Set the context in a Kafka header list ``[(key, bytes)]`` (key ``baggage``).

    Changes ``headers`` in place (a new list when None) and returns it.
    """
    out = headers if headers is not None else []
    token = token if token is not None else current_token()
    if token is None:
        return out
    at = [i for i, (k, _) in enumerate(out) if _is_baggage(k)]
    value = _merged(_join(out[i][1] for i in at), token, replace)
    if value is None:
        return out
    for i in reversed(at):
        del out[i]
    out.insert(at[0] if at else len(out), (HEADER, value.encode()))
    return out


def extract_kafka(
    headers: Iterable[tuple[str | bytes, str | bytes | None]] | Mapping[Any, Any] | None,
) -> str | None:
    """The coalmine member of a Kafka record's ``baggage`` header(s), or None."""
    if not headers:
        return None
    if isinstance(headers, Mapping):
        return extract_message(headers)
    return find_in_baggage(_join(v for k, v in headers if _is_baggage(k)), BAGGAGE_KEY)
