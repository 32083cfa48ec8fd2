"""coalmine names from CloudFormation's: logical ids and descriptions in lowercase-dashes.

``PlaceOrderFunction`` becomes ``place-order-function``, ``APIHandlerV2``
``api-handler-v2``: what coalmine's names allow (`coalmine.core.model.NAME_PATTERN`).
"""

from __future__ import annotations

import re

from coalmine.core.model import NAME_PATTERN

__all__ = ["MAX_NAME", "app_name_from", "name_from"]

MAX_NAME = 63
_ACRONYM = re.compile(r"([A-Z]+)([A-Z][a-z])")
_WORD = re.compile(r"([a-z0-9])([A-Z])")
_OTHER = re.compile(r"[^a-z0-9]+")
_SENTENCE_END = re.compile(r"[.:;(]|\s-\s")


def name_from(text: str, limit: int = MAX_NAME) -> str:
    """``text`` in lowercase words joined by dashes, at most ``limit`` characters ('' if none)."""
    words = _WORD.sub(r"\1-\2", _ACRONYM.sub(r"\1-\2", text))
    name = _OTHER.sub("-", words.lower()).strip("-")
    if len(name) > limit:
        cut = name[: limit + 1]
        # end on a whole word when one fits
        name = cut.rsplit("-", 1)[0] if "-" in cut[:limit] else name[:limit]
    name = name.strip("-")
    return name if NAME_PATTERN.fullmatch(name) else ""


def app_name_from(description: str) -> str:
    """An app name from a template's Description: its first line, up to its first sentence."""
    lines = description.strip().splitlines()
    first = _SENTENCE_END.split(lines[0] if lines else "", maxsplit=1)[0]
    return name_from(first, limit=40)
