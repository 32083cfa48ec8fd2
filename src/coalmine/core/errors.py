"""The one domain error type of coalmine, and its input-validation kind.

Outer layers map them to HTTP (400/422, 404, 409) and CLI exit codes (2 for
bad input, 1 for a failed operation); every message says what to fix.
"""

from __future__ import annotations

__all__ = ["CoalmineError", "Conflict", "InvalidInput", "NotFound"]


class CoalmineError(Exception):
    """Base of every error coalmine raises on purpose."""


class InvalidInput(CoalmineError, ValueError):
    """Input that cannot be accepted; the message says what to fix."""


class NotFound(CoalmineError, LookupError):
    """A named thing (app, function, version, release, token) does not exist."""


class Conflict(CoalmineError):
    """The request is valid but clashes with the current state (e.g. an active release)."""
