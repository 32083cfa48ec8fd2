"""Bounded decoding of JSON documents from the wire: a depth limit checked before parsing, and
numbers that fit what reads them.

Python's ``json`` recurses once per level of nesting (a document a few
thousand brackets deep raises `RecursionError` from wherever it is parsed),
turns ``1e400`` into ``inf``, takes ``NaN`` and ``Infinity``, and gives ints
of up to 4300 digits that later overflow a float or a column. `load_json`
refuses each of them with an `InvalidInput` that says what is wrong, so a
handler sees only values the rest of coalmine can hold (DESIGN rule 7).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

from coalmine.core.errors import InvalidInput

__all__ = ["MAX_DEPTH", "MAX_INT", "check_number", "load_json", "long_int", "too_deep"]

MAX_DEPTH = 32
"""How deep arrays and objects may nest in a document (coalmine's own nest five deep)."""
MAX_INT = 2**63 - 1
"""The largest magnitude of a whole number in a document: 64 bits."""

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INT_DIGITS = len(str(MAX_INT))


def too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether the arrays and objects of JSON ``text`` nest more than ``limit`` deep.

    Read without parsing: strings are cut out, then the brackets counted. A
    document nested too deep is known after ``limit + 1`` brackets in a row.
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if len(brackets) <= limit:
        return False
    depth = 0
    for c in brackets:
        if c in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def check_number(value: object, what: str = "the document") -> None:
    """`InvalidInput` unless ``value`` (a number read from ``what``) is finite and, if whole,
    within 64 bits; other values pass."""
    if isinstance(value, bool):
        return
    if isinstance(value, int) and not -MAX_INT <= value <= MAX_INT:
        raise InvalidInput(f"the number {_digits(str(value))} in {what} is beyond 64 bits")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"the number {value!r} in {what} is not finite")


def long_int(text: str, what: str = "the document") -> None:
    """`InvalidInput` if ``text`` is a decimal whole number of more digits than 64 bits hold,
    before anything converts it (Python refuses ints of over 4300 digits with a ValueError)."""
    digits = text.strip().lstrip("+-").replace("_", "")
    if len(digits) > _INT_DIGITS and digits.isdigit():
        raise InvalidInput(f"the number {_digits(text.strip())} in {what} is beyond 64 bits")


def _digits(text: str) -> str:
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} digits)"


def load_json(raw: bytes | str, what: str = "the body") -> Any:
    """Parse JSON from the wire, or raise `InvalidInput` saying what is wrong with it.

    Refused: text that is not UTF-8 or not JSON, nesting deeper than
    `MAX_DEPTH` (checked before parsing), whole numbers beyond 64 bits,
    numbers beyond a float's range, and ``NaN`` / ``Infinity``.
    """
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"{what} is not UTF-8 text") from None
    if too_deep(raw):
        raise InvalidInput(f"{what} is nested more than {MAX_DEPTH} levels deep")

    def whole(text: str) -> int:
        if len(text.lstrip("-")) > _INT_DIGITS:  # refused before int() reads thousands of digits
            raise InvalidInput(f"the number {_digits(text)} in {what} is beyond 64 bits")
        value = int(text)
        check_number(value, what)
        return value

    def real(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise InvalidInput(
                f"the number {_digits(text)} in {what} is beyond the range of a float"
            )
        return value

    def constant(name: str) -> NoReturn:
        raise InvalidInput(f"{name} is not a JSON number")

    try:
        return json.loads(raw, parse_int=whole, parse_float=real, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{what} is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except RecursionError:  # nesting under the limit on a nearly full stack
        raise InvalidInput(f"{what} is nested too deeply to read") from None
