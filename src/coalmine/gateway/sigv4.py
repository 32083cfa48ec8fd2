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
from urllib.parse import quote

__all__ = ["sign_invoke"]

_ALGORITHM = "AWS4-HMAC-SHA256"
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

    ``path`` is as sent (its segments already percent-encoded); ``query`` is one
    ``name=value`` pair or several joined by ``&``, already encoded.
    """
    stamp = time.gmtime(time.time() if now is None else now)
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", stamp)
    day = amz_date[:8]
    headers = {"content-type": "application/json", "host": host, "x-amz-date": amz_date}
    if token:
        headers["x-amz-security-token"] = token
    signed = ";".join(sorted(headers))
    canonical_headers = "".join(f"{k}:{' '.join(headers[k].split())}\n" for k in sorted(headers))
    # the path is encoded once more for the canonical request (all services but S3)
    canonical_uri = quote(path, safe="/~")
    canonical_query = "&".join(sorted(query.split("&"))) if query else ""
    canonical = "\n".join(
        (
            "POST",
            canonical_uri,
            canonical_query,
            canonical_headers,
            signed,
            hashlib.sha256(payload).hexdigest(),
        )
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        (_ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest())
    )
    key = _signing_key(secret_key, day, region, service)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    authorization = (
        f"{_ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={signed},"
        f" Signature={signature}"
    )
    out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items() if k != "host"]
    out.append((b"authorization", authorization.encode("latin-1")))
    out.append((b"content-length", str(len(payload)).encode()))
    return out
