"""Which request paths the gateway refuses: dot-segments and backslashes, plain or encoded.

The gateway appends the rest of a path to an upstream's URL as the client
sent it. A ``..`` segment there (``/api/../../admin``) would let a client
walk out of the function's URL prefix on any upstream that resolves it, and
upstreams differ in what they resolve: ``%2e%2e``, ``..%2f``, a backslash
(``..\\``), or a value encoded twice. Normalising would mean guessing which
of those an upstream honours, so the gateway refuses them all with 400.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

__all__ = ["unsafe_path"]

_DECODINGS = 3
"""how many rounds of percent-decoding are checked (``%25`` hides one round each)"""


def unsafe_path(raw_path: bytes) -> str | None:
    """Why ``raw_path`` (as sent, without the query) is refused, or None when it is safe."""
    text = raw_path
    for _ in range(_DECODINGS):
        if b"\\" in text:
            return "a backslash in the path (plain or percent-encoded) is not accepted"
        if any(segment in (b".", b"..") for segment in text.split(b"/")):
            return (
                "a dot-segment ('.' or '..', plain or percent-encoded) in the path is not"
                " accepted: send the path with the segments resolved"
            )
        if b"%" not in text:
            return None
        text = unquote_to_bytes(text)
    return None
