"""`Boto3LambdaVersions`: a Lambda function's published versions, read from AWS (``coalmine[aws]``).

ListVersionsByFunction answers at most 50 versions a page; the paginator
follows ``NextMarker`` to the last page. ``$LATEST`` is left out: it is not
a version (it changes under its name). The client comes from the standard
AWS chain (credentials, ``AWS_ENDPOINT_URL_LAMBDA``); the region is the one
a function ARN names, else the chain's.

AWS's refusals keep AWS's words: a function that does not exist is the
caller's mistake (`InvalidInput`); anything else (no credentials, access
denied, throttled, unreachable) is `UpstreamFailed`.
"""

from __future__ import annotations

import threading
from typing import Any

from coalmine._extras import require
from coalmine.core.errors import InvalidInput, UpstreamFailed
from coalmine.core.model import unqualified_lambda_function
from coalmine.core.ports import PublishedVersion

__all__ = ["LATEST", "Boto3LambdaVersions"]

LATEST = "$LATEST"
_CALLER_ERRORS = frozenset({"ResourceNotFoundException", "InvalidParameterValueException"})


def _region_of(function: str) -> str | None:
    return function.split(":")[3] if function.startswith("arn:") else None


class Boto3LambdaVersions:
    """A `coalmine.core.ports.LambdaVersions` over boto3's Lambda client.

    Without ``client``, one is made per region on first use, from the standard
    AWS configuration chain (boto3 is imported then: the ``aws`` extra).
    """

    def __init__(self, client: Any = None) -> None:
        self._client = client
        self._clients: dict[str | None, Any] = {}
        self._lock = threading.Lock()

    def _lambda(self, region: str | None) -> Any:
        if self._client is not None:
            return self._client
        with self._lock:
            if region not in self._clients:
                boto3 = require("boto3", "aws")
                self._clients[region] = boto3.client("lambda", region_name=region)
            return self._clients[region]

    def published(self, function: str) -> list[PublishedVersion]:
        name = unqualified_lambda_function(function, "Lambda function")
        errors = require("botocore.exceptions", "aws")
        try:
            pages = (
                self._lambda(_region_of(name))
                .get_paginator("list_versions_by_function")
                .paginate(FunctionName=name)
            )
            found = [
                PublishedVersion(str(v["Version"]), str(v["FunctionArn"]))
                for page in pages
                for v in page.get("Versions", ())
                if v.get("Version") != LATEST
            ]
        except errors.ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", "Error"), error.get("Message", str(exc))
            said = f"Lambda function {function!r}: AWS answered {code}: {message}"
            raise (InvalidInput if code in _CALLER_ERRORS else UpstreamFailed)(said) from None
        except errors.BotoCoreError as exc:  # no credentials or region, endpoint unreachable
            raise UpstreamFailed(f"Lambda function {function!r}: cannot ask AWS: {exc}") from None
        return sorted(found, key=lambda v: int(v.version) if v.version.isdigit() else 0)
