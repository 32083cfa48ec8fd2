"""The one domain error type of coalmine, and its input-validation kind.

Outer layers map them to HTTP (400/422, 404, 409, 502) and CLI exit codes (2
for bad input, 1 for a failed operation); every message says what to fix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

__all__ = [
    "CoalmineError",
    "Conflict",
    "InvalidInput",
    "NotFound",
    "UpstreamFailed",
    "require_fields",
    "retry_on_conflict",
]

T = TypeVar("T")


class CoalmineError(Exception):
    """Base of every error coalmine raises on purpose."""


class InvalidInput(CoalmineError, ValueError):
    """Input that cannot be accepted; the message says what to fix."""


class NotFound(CoalmineError, LookupError):
    """A named thing (app, function, version, release, token) does not exist."""


class Conflict(CoalmineError):
    """The request is valid but clashes with the current state (e.g. an active release)."""


class UpstreamFailed(CoalmineError):
    """A service coalmine asked on the caller's behalf (AWS) refused or could not be reached.

    The message carries that service's own words; nothing was changed.
    """


def require_fields(data: Mapping[str, object], expected: Iterable[str], what: str) -> None:
    """Raise InvalidInput unless ``data`` has exactly the ``expected`` keys, naming the odd ones."""
    wanted = set(expected)
    missing = sorted(wanted - set(data))
    unknown = sorted(set(data) - wanted)
    if missing or unknown:
        raise InvalidInput(
            f"{what} needs exactly the fields "
            + ", ".join(sorted(wanted))
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
        )


def retry_on_conflict(
    attempt: Callable[[], T],
    *,
    attempts: int = 3,
    on_retry: Callable[[Conflict], None] | None = None,
) -> T:
    """``attempt()``, tried again (up to ``attempts`` times in all) while it raises `Conflict`:
    another writer changed the same thing first. The last `Conflict` propagates."""
    for _ in range(attempts - 1):
        try:
            return attempt()
        except Conflict as exc:
            if on_retry is not None:
                on_retry(exc)
    return attempt()
