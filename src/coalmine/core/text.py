"""What text from the wire may be stored: the one check every stored string passes.

A string that JSON can carry but UTF-8 cannot (a lone surrogate such as
``"\\ud800"``) was once stored and then broke every read of it, the routing
snapshot included. NUL ends strings in C and in PostgreSQL text; other
control characters split log lines and headers. So every string the control
plane stores is checked here first, at the edge, and refused with a message
that names the field: nothing invalid is ever written.

Free text (a reason, a description) may hold tab and newline; every other
string (names, user keys, header values) holds no control character at all.
"""

from __future__ import annotations

import unicodedata

from coalmine.core.errors import InvalidInput

__all__ = ["check_text", "text_problem"]

_FREE_TEXT_CONTROLS = frozenset("\t\n")


def text_problem(value: str, *, free: bool = False) -> str | None:
    """What makes ``value`` unfit to store, or None when it is fine."""
    if value.isprintable():  # the common case: no control, surrogate or separator at all
        return None
    for ch in value:
        kind = unicodedata.category(ch)
        if kind == "Cs":
            return (
                f"a lone surrogate (U+{ord(ch):04X}) is not Unicode text and cannot be stored:"
                " send valid UTF-8"
            )
        if ch == "\0":
            return "NUL (U+0000) cannot be stored"
        if kind == "Cc" and not (free and ch in _FREE_TEXT_CONTROLS):
            allowed = " (tab and newline are allowed here)" if free else ""
            return f"control character U+{ord(ch):04X} cannot be stored{allowed}"
    return None


def check_text(value: str, what: str, *, free: bool = False) -> str:
    """``value`` when it may be stored; else InvalidInput naming ``what`` and the fault."""
    problem = text_problem(value, free=free)
    if problem is not None:
        raise InvalidInput(f"{what}: {problem}")
    return value
