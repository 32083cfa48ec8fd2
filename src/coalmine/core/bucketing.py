"""The bucketing function: which of 10,000 buckets a user falls in for a release.

This is the one function every data-plane component (SDK, gateway, discovery)
uses to put a user in a cohort. It is a wire contract, pinned by the golden
vectors in ``tests/data/bucket_vectors.json``; changing it moves users between
channels in the middle of a release (DESIGN rule 3).

Specification, for reimplementation in another language:

1. ``data = UTF-8(salt) || 0x3A (":") || UTF-8(user_key)``. The user key is
   taken as given: no trimming, no case folding, no Unicode normalisation.
   (A Python ``str`` holding a lone surrogate is encoded with
   ``surrogatepass``, i.e. as its 3-byte generalised UTF-8 form.)
2. ``h = MurmurHash3_x86_32(data, seed=0)`` as an unsigned 32-bit integer.
3. ``bucket = h mod 10000``.

A user is in the canary channel of a release while ``bucket < exposure``
(exposure in basis points, 0..10000), so raising exposure only ever adds
users. Salts are chosen per release (``new_salt``) so cohorts of different
releases are independent; they never contain ":".
"""

from __future__ import annotations

import re
import secrets

import mmh3

from coalmine.core.errors import InvalidInput

__all__ = ["BUCKETS", "SALT_PATTERN", "bucket", "new_salt", "validate_salt"]

BUCKETS = 10_000
SALT_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def bucket(salt: str, user_key: str) -> int:
    """Return the user's bucket in [0, 10000) for a release salt."""
    data = salt + ":" + user_key
    if data.isascii():
        # mmh3 hashes a str as its UTF-8 bytes; ASCII skips an encode call.
        return int(mmh3.hash(data, 0, False)) % BUCKETS
    # Encode ourselves: mmh3 crashes the interpreter on a lone surrogate.
    return int(mmh3.hash(data.encode("utf-8", "surrogatepass"), 0, False)) % BUCKETS


def new_salt() -> str:
    """A fresh random salt for a new release (16 hex digits)."""
    return secrets.token_hex(8)


def validate_salt(salt: str) -> str:
    """Return the salt if it is usable, else raise InvalidInput saying why."""
    if not isinstance(salt, str) or not SALT_PATTERN.fullmatch(salt):
        raise InvalidInput(f"invalid salt {salt!r}: use 1-64 characters from A-Z a-z 0-9 _ -")
    return salt
