"""How a user key travels on an HTTP header or in a cookie, and back to the one key.

A user key is a Unicode string, bucketed exactly as given
(`coalmine.core.bucketing`: no trimming, no case folding, no Unicode
normalisation). Every entry point must hand the bucketing function the same
string the user's system holds, whatever wire it crossed:

- in JSON (the SDK's calls, discovery's batch, OFREP, JWT claims): the
  string itself, UTF-8 on the wire;
- in a query string (``GET /v1/discovery?user=``): percent-encoded UTF-8;
- on an HTTP header or in a cookie (the gateway's ``--user-header`` and
  ``--user-cookie``, ``x-coalmine-user`` sent downstream, an SDK handler's
  ``user=`` header): percent-encoded UTF-8 (`encode_header`). A header may
  also carry raw UTF-8 bytes; `decode_header` reads both. So ``%`` in an id
  must travel as ``%25``.

Not normalising (say to NFC) is deliberate: "zoë" composed and decomposed
may be two accounts in the user's system, and normalising anywhere would
move every non-normalised id of a running release to another bucket.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

__all__ = ["HEADER_SAFE", "decode_header", "decode_text", "encode_header"]

HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '%",;\\')
"""printable ASCII that is kept as it is: RFC 6265's cookie-octets, less ``%``"""
_KEPT = frozenset(HEADER_SAFE)


def encode_header(key: str) -> str:
    """``key`` as an ASCII header or cookie value: printable ASCII kept, the rest as %XX of UTF-8.

    Lone surrogates (which no UTF-8 wire can carry) are encoded as their
    generalised UTF-8 bytes, as the bucketing function hashes them.
    """
    if key.isascii() and _KEPT.issuperset(key):
        return key
    return quote(key.encode("utf-8", "surrogatepass"), safe=HEADER_SAFE)


def decode_header(value: str) -> str:
    """The user key in a header or cookie value, as ASGI servers hand it over (latin-1 text).

    Raw bytes are read as UTF-8 (text that is not valid UTF-8 is kept as it
    came), then %XX sequences are decoded as UTF-8 (`decode_text`). The caller
    strips the header's own surrounding whitespace first, not the key's:
    ``%20`` is a key's space.
    """
    text = value
    if not text.isascii() and all(ord(c) < 0x100 for c in text):
        try:
            text = text.encode("latin-1").decode("utf-8")
        except UnicodeDecodeError:
            text = value
    return decode_text(text)


def decode_text(value: str) -> str:
    """The user key in a header value that is already Unicode text (a Lambda event's
    ``headers``: API Gateway decoded the bytes): only %XX sequences are decoded as
    UTF-8 (a sequence that is not valid UTF-8 is kept literally).

    Not `decode_header`: its latin-1 step would read a genuine "Â®" as the
    UTF-8 bytes of "®", another user.
    """
    if "%" not in value:
        return value
    try:
        return unquote(value, errors="strict")
    except UnicodeDecodeError:
        return value
