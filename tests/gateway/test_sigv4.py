"""The gateway's SigV4 signer gives exactly botocore's signature for the Invoke request."""

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import quote

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from coalmine.gateway.sigv4 import sign_invoke

NOW = 1_764_868_445.0  # 2025-12-04T17:14:05Z
ARN = "arn:aws:lambda:eu-west-1:123456789012:function:place-order"


def _botocore(
    url: str, payload: bytes, creds: Credentials, region: str, monkeypatch: Any
) -> dict[str, str]:
    fixed = datetime.datetime.fromtimestamp(NOW, datetime.UTC).replace(tzinfo=None)
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: fixed)
    request = AWSRequest(
        method="POST", url=url, data=payload, headers={"content-type": "application/json"}
    )
    SigV4Auth(creds, "lambda", region).add_auth(request)
    return {k.lower(): v for k, v in request.headers.items()}


def _ours(
    host: str, path: str, query: str, payload: bytes, creds: Credentials, region: str
) -> dict[str, str]:
    headers = sign_invoke(
        host=host,
        path=path,
        query=query,
        payload=payload,
        access_key=creds.access_key,
        secret_key=creds.secret_key,
        token=creds.token,
        region=region,
        now=NOW,
    )
    return {k.decode(): v.decode() for k, v in headers}


@pytest.mark.parametrize("function", ["notify-user", ARN], ids=["name", "arn"])
@pytest.mark.parametrize(
    "token", [None, "FwoGZXIvYXdzEJr//////////session+token="], ids=["keys", "session"]
)
@pytest.mark.parametrize("qualifier", ["1", "live", "$LATEST"])
def test_the_signature_is_botocores(
    function: str, token: str | None, qualifier: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    host = "127.0.0.1:3001"
    path = f"/2015-03-31/functions/{quote(function, safe='-_.~')}/invocations"
    query = f"Qualifier={quote(qualifier, safe='-_.~')}"
    payload = b'{"version":"2.0","rawPath":"/orders","body":"{\\"a\\": 1}"}'
    theirs = _botocore(f"http://{host}{path}?{query}", payload, creds, "eu-west-1", monkeypatch)
    ours = _ours(host, path, query, payload, creds, "eu-west-1")
    assert ours["authorization"] == theirs["authorization"]
    assert ours["x-amz-date"] == theirs["x-amz-date"]
    assert ours.get("x-amz-security-token") == theirs.get("x-amz-security-token")
    assert "content-length" not in ours  # the sender adds it


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300), st.text(alphabet="abcdefghij-_", min_size=1, max_size=20))
def test_any_payload_and_name_sign_as_botocore_does(payload: bytes, name: str) -> None:
    creds = Credentials("AKID", "secret")
    path = f"/2015-03-31/functions/{quote(name, safe='-_.~')}/invocations"
    with pytest.MonkeyPatch.context() as mp:
        theirs = _botocore(
            f"https://lambda.us-east-1.amazonaws.com{path}?Qualifier=2",
            payload,
            creds,
            "us-east-1",
            mp,
        )
    ours = _ours("lambda.us-east-1.amazonaws.com", path, "Qualifier=2", payload, creds, "us-east-1")
    assert ours["authorization"] == theirs["authorization"]
