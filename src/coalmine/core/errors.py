"""The one domain error type of coalmine, and its input-validation kind.

Outer layers map `InvalidInput` to HTTP 4xx / CLI exit code 2; every message
says what to fix.
"""

from __future__ import annotations

__all__ = ["CoalmineError", "InvalidInput"]


class CoalmineError(Exception):
    """Base of every error coalmine raises on purpose."""


class InvalidInput(CoalmineError, ValueError):
    """Input that cannot be accepted; the message says what to fix."""
