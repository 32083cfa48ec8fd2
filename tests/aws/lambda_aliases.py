"""Lambda functions with published versions and an alias, on moto: what the alias tests need.

`mocked_lambda` starts moto (no Docker) with fake credentials; `publish`
creates a function and publishes distinct versions of it (moto, like AWS,
publishes a new version only when the code changed); `alias_of` reads an
alias back as the `AliasRouting` it routes as; `Sent` is a boto3 session
whose clients record the Lambda requests they send.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from coalmine.core.alias import AliasRouting
from tests.aws import REGION, aws_environment

boto3 = pytest.importorskip("boto3")
moto = pytest.importorskip("moto")


@contextmanager
def mocked_lambda() -> Iterator[Any]:
    """moto's AWS for the block; yields a Lambda client of the test's region."""
    with aws_environment(), moto.mock_aws(config={"lambda": {"use_docker": False}}):
        yield boto3.client("lambda", region_name=REGION)


def _zip(body: str) -> bytes:
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as z:
        z.writestr("app.py", f"def handler(event, context):\n    return {body}\n")
    return code.getvalue()


def publish(client: Any, name: str, versions: int = 2, alias: str | None = "live") -> str:
    """Create function ``name`` with ``versions`` published versions ("1", "2", ...), and
    ``alias`` on version 1; the function's unqualified ARN."""
    iam = boto3.client("iam", region_name=REGION)
    try:
        role = iam.get_role(RoleName="lambda")["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        role = iam.create_role(
            RoleName="lambda", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"})
        )["Role"]["Arn"]
    arn: str = client.create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=role,
        Handler="app.handler",
        Code={"ZipFile": _zip("0")},
    )["FunctionArn"]
    for i in range(1, versions + 1):
        client.update_function_code(FunctionName=name, ZipFile=_zip(str(i)))
        assert client.publish_version(FunctionName=name)["Version"] == str(i)
    if alias is not None:
        client.create_alias(FunctionName=name, Name=alias, FunctionVersion="1")
    return arn


def alias_of(client: Any, function: str, alias: str = "live") -> AliasRouting:
    got = client.get_alias(FunctionName=function, Name=alias)
    weights = (got.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    return AliasRouting(got["FunctionVersion"], weights)


class Sent:
    """A boto3 session whose clients record the URL of each Lambda request they send
    (``operation``: only that one, e.g. ``UpdateAlias``)."""

    def __init__(self, operation: str | None = None) -> None:
        self.session = boto3.session.Session()
        self.urls: list[str] = []
        event = "before-send.lambda" + (f".{operation}" if operation else "")
        self.session.events.register(event, self._sent)

    def _sent(self, request: Any, **_: Any) -> None:
        self.urls.append(request.url)
