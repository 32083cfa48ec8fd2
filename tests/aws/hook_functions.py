"""Lambda hook functions served by the local Invoke endpoint (`coalmine lambda local`),
reached the standard way, through ``AWS_ENDPOINT_URL_LAMBDA``.

Each function of `tests.integrations.lambda_fns.hooks` is a Lambda function
named ``check-<handler>`` with one published version, ``1``, and an alias
``live``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from coalmine.gateway.server import PROTOCOL
from coalmine.integrations.lambda_local import LambdaFunction, LocalLambda, serve_in_thread
from tests.aws import aws_environment

HANDLERS = "tests.integrations.lambda_fns.hooks"
NAMES = ("passes", "fails", "codedeploy_failed", "raises", "slow")


def function_name(handler: str) -> str:
    return "check-" + handler.replace("_", "-")


@contextmanager
def hook_functions() -> Iterator[LocalLambda]:
    """The endpoint, with fake credentials and ``AWS_ENDPOINT_URL_LAMBDA`` set while it runs."""
    functions = {
        function_name(h): LambdaFunction(
            function_name(h), {"1": f"{HANDLERS}:{h}"}, {"live": "1"}, timeout=5
        )
        for h in NAMES
    }
    endpoint = LocalLambda(functions)
    try:
        with serve_in_thread(endpoint, http=PROTOCOL) as url, aws_environment():
            env = pytest.MonkeyPatch()
            env.setenv("AWS_ENDPOINT_URL_LAMBDA", url)
            env.delenv("AWS_PROFILE", raising=False)
            try:
                yield endpoint
            finally:
                env.undo()
    finally:
        endpoint.close()
