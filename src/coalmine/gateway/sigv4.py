"""AWS Signature Version 4 for the one request the gateway signs: a Lambda Invoke POST.

botocore's ``SigV4Auth`` signs any request of any service, through an
``AWSRequest`` and ``email.message`` headers; measured in the gateway's Lambda
path (``bench/gateway.py`` under ``--profile-gateway``) that generality was
about half the gateway's CPU per Lambda call. This module signs exactly the
Invoke request the Lambda target sends (POST, a JSON body, the headers
``content-type``, ``host``, ``x-amz-date`` and, with temporary credentials,
``x-amz-security-token``), following the SigV4 specification, with the
derived signing key cached per day, region and secret. Its output equals
botocore's for the same request and time (``tests/gateway/test_sigv4.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from functools import lru_cache
from urllib.parse import quote

__all__ = ["sign_invoke"]

_ALGORITHM = "AWS4-HMAC-SHA256"
_SIGNED = "content-type;host;x-amz-date"
_SIGNED_WITH_TOKEN = "content-type;host;x-amz-date;x-amz-security-token"
_keys: dict[tuple[str, str, str, str], bytes] = {}


def _signing_key(secret: str, day: str, region: str, service: str) -> bytes:
    cache_key = (secret, day, region, service)
    key = _keys.get(cache_key)
    if key is None:
        key = hmac.new(("AWS4" + secret).encode(), day.encode(), hashlib.sha256).digest()
        for part in (region, service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        if len(_keys) > 64:  # days and rotated secrets pass: keep the cache small
            _keys.clear()
        _keys[cache_key] = key
    return key


@lru_cache(maxsize=4)
def _amz_date(second: int) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))


@lru_cache(maxsize=64)
def _trimmed(value: str) -> str:
    return " ".join(value.split())


@lru_cache(maxsize=1024)
def _canonical_uri(path: str) -> str:
    return quote(path, safe="/~")


@lru_cache(maxsize=1024)
def _canonical_query(query: str) -> str:
    return "&".join(sorted(query.split("&"))) if query else ""


def sign_invoke(
    *,
    host: str,
    path: str,
    query: str,
    payload: bytes,
    access_key: str,
    secret_key: str,
    token: str | None,
    region: str,
    service: str = "lambda",
    now: float | None = None,
) -> list[tuple[bytes, bytes]]:
    """The headers of a signed ``POST {path}?{query}`` to ``host`` with a JSON ``payload``.

    ``host`` and ``content-length`` are not among them: the sender adds both
    (neither is part of what is signed beyond ``host``'s value).

    ``path`` is as sent (its segments already percent-encoded); ``query`` is one
    ``name=value`` pair or several joined by ``&``, already encoded.
    """
    amz_date = _amz_date(int(time.time() if now is None else now))
    day = amz_date[:8]
    # the canonical headers, in name order; none but the token can hold spaces
    canonical_headers = f"content-type:application/json\nhost:{host}\nx-amz-date:{amz_date}\n"
    signed = _SIGNED
    if token:
        canonical_headers += f"x-amz-security-token:{_trimmed(token)}\n"
        signed = _SIGNED_WITH_TOKEN
    # the path is encoded once more for the canonical request (all services but S3)
    canonical = (
        f"POST\n{_canonical_uri(path)}\n{_canonical_query(query)}\n{canonical_headers}\n"
        f"{signed}\n{hashlib.sha256(payload).hexdigest()}"
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = f"{_ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = _signing_key(secret_key, day, region, service)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    authorization = (
        f"{_ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={signed},"
        f" Signature={signature}"
    )
    out = [(b"content-type", b"application/json"), (b"x-amz-date", amz_date.encode())]
    if token:
        out.append((b"x-amz-security-token", token.encode("latin-1")))
    out.append((b"authorization", authorization.encode("latin-1")))
    return out
