"""What text may be stored: valid Unicode without NUL or control characters."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalmine.core.errors import InvalidInput
from coalmine.core.text import check_text, text_problem

ODD = ["\ud800", "\udfff", "\x00", "\n", "\t", "\r", "\x1b", "\x7f", "\x85", "\u2028", "é"]


@given(st.text(st.one_of(st.characters(), st.sampled_from(ODD))), st.booleans())
def test_storable_exactly_when_utf8_and_free_of_controls(value: str, free: bool) -> None:
    try:
        value.encode("utf-8")
        utf8 = True
    except UnicodeEncodeError:
        utf8 = False
    allowed = {"\t", "\n"} if free else set()
    controls = any(unicodedata.category(c) == "Cc" and c not in allowed for c in value)
    assert (text_problem(value, free=free) is None) == (utf8 and not controls)


def test_messages_name_the_field_and_the_character() -> None:
    with pytest.raises(InvalidInput, match=r"^name: a lone surrogate \(U\+D83D\)"):
        check_text("a\ud83d", "name")
    with pytest.raises(InvalidInput, match=r"NUL \(U\+0000\)"):
        check_text("a\x00", "name", free=True)
    with pytest.raises(InvalidInput, match=r"U\+000A cannot be stored$"):
        check_text("a\nb", "name")
    assert check_text("p99 up\n\tsee the dashboard", "reason", free=True).startswith("p99")
    assert check_text("zoë 😀 \u2028", "name") == "zoë 😀 \u2028"
