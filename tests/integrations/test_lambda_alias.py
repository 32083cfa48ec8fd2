"""`Boto3LambdaAliases` beyond the contract: where its calls go and how long they may take.

The region is the one a function's ARN names (else the chain's); each call
is made once (botocore's retries off: the controller retries) and bounded by
its connect and read timeouts; a client that cannot be made (no region) is
an `AliasCallFailed` saying why. Everything stays on 127.0.0.1 or moto.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coalmine.core.alias import AliasCallFailed, AliasRouting
from coalmine.integrations.lambda_alias import Boto3LambdaAliases
from tests.aws import ACCOUNT, aws_environment
from tests.aws.lambda_aliases import Sent, mocked_lambda
from tests.helpers import free_port


@pytest.fixture
def aws() -> Iterator[None]:
    with aws_environment():
        yield


def test_the_region_comes_from_the_arn_else_from_the_chain(aws: None) -> None:
    with mocked_lambda():
        sent = Sent()
        aliases = Boto3LambdaAliases(session=sent.session)
        for function in (f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:f", "f"):
            with pytest.raises(AliasCallFailed, match="ResourceNotFoundException"):
                aliases.get(function, "live")
        aliases.close()
    eu, default = sent.urls
    assert eu.startswith("https://lambda.eu-west-1.amazonaws.com/")
    assert default.startswith("https://lambda.us-east-1.amazonaws.com/")


def test_an_unreachable_endpoint_fails_at_once_without_retries(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", f"http://127.0.0.1:{free_port()}")
    sent = Sent()
    aliases = Boto3LambdaAliases(session=sent.session)
    with pytest.raises(AliasCallFailed, match=r"EndpointConnectionError: .*127\.0\.0\.1"):
        aliases.update("place-order", "live", AliasRouting("2"))
    assert len(sent.urls) == 1, "one attempt: the controller does the retrying"
    aliases.close()


def test_an_endpoint_that_never_answers_is_cut_off_at_the_read_timeout(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        port = silent.getsockname()[1]
        monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", f"http://127.0.0.1:{port}")
        sent = Sent()
        aliases = Boto3LambdaAliases(read_timeout=0.3, session=sent.session)
        started = time.monotonic()
        with pytest.raises(AliasCallFailed, match="ReadTimeoutError"):
            aliases.get("place-order", "live")
        took = time.monotonic() - started
    assert 0.3 <= took < 3, f"bounded by the read timeout, took {took:.2f}s"
    assert len(sent.urls) == 1
    aliases.close()


def test_no_region_is_a_failed_call_that_says_so(
    aws: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(AliasCallFailed, match=r"cannot make a Lambda client: .*region"):
        Boto3LambdaAliases().get("place-order", "live")
