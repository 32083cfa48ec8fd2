"""Lambda functions with published versions on moto, and moto's ListVersionsByFunction made
to answer as AWS does.

moto 5.2.5 answers ListVersionsByFunction in one page whatever ``MaxItems``
says, finds nothing for a function given by ARN, and answers an empty list
(not ResourceNotFoundException) for a function that does not exist.
`aws_version_listing` replaces that one response while it is active: the
function is found by name or ARN through moto's own backend (its 404 is
moto's ResourceNotFoundException), and the versions come in pages of
``MaxItems`` (AWS's default: 50) with a ``NextMarker``, so a client that
does not follow the markers sees only the first page, as on AWS.
"""

from __future__ import annotations

import io
import json
import secrets
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock
from urllib.parse import unquote

import boto3
from moto.awslambda.responses import LambdaResponse

from tests.aws import REGION

AWS_PAGE = 50
"""the most versions ListVersionsByFunction answers in one page without MaxItems"""


def _list_versions_as_aws(self: Any) -> str:
    function = self.backend.get_function(unquote(self.path.split("/")[-2]), None)
    everything = list(self.backend.list_versions_by_function(function.function_name))
    start = int(self.querystring.get("Marker", ["0"])[0])
    size = int(self.querystring.get("MaxItems", [str(AWS_PAGE)])[0])
    page = everything[start : start + size]
    out: dict[str, Any] = {"Versions": [fn.get_configuration() for fn in page]}
    if start + size < len(everything):
        out["NextMarker"] = str(start + size)
    return json.dumps(out)


@contextmanager
def aws_version_listing() -> Iterator[list[dict[str, str]]]:
    """moto's ListVersionsByFunction as AWS answers it; yields the query of every page asked."""
    pages: list[dict[str, str]] = []

    def listed(self: Any) -> str:
        query = self.querystring  # moto puts the headers here when there is no query
        pages.append({k: query[k][0] for k in ("Marker", "MaxItems") if k in query})
        return _list_versions_as_aws(self)

    with mock.patch.object(LambdaResponse, "list_versions_by_function", listed):
        yield pages


def _role() -> str:
    iam = boto3.client("iam", region_name=REGION)
    try:
        return str(iam.get_role(RoleName="lambda-hooks")["Role"]["Arn"])
    except iam.exceptions.NoSuchEntityException:
        return str(
            iam.create_role(
                RoleName="lambda-hooks",
                AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"}),
            )["Role"]["Arn"]
        )


def create_function(name: str, *, region: str = REGION) -> str:
    """Create Lambda function ``name`` on moto (``$LATEST`` only); its unqualified ARN."""
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as z:
        z.writestr("app.py", "def handler(event, context):\n    return event\n")
    created = boto3.client("lambda", region_name=region).create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=_role(),
        Handler="app.handler",
        Code={"ZipFile": code.getvalue()},
    )
    return str(created["FunctionArn"])


def publish(name: str, count: int = 1, *, region: str = REGION) -> list[str]:
    """Publish ``count`` new versions of ``name`` (each after a configuration change, as a
    deployment makes one); their qualified ARNs."""
    client = boto3.client("lambda", region_name=region)
    arns = []
    for _ in range(count):
        client.update_function_configuration(
            FunctionName=name, Environment={"Variables": {"BUILD": secrets.token_hex(4)}}
        )
        arns.append(str(client.publish_version(FunctionName=name)["FunctionArn"]))
    return arns
