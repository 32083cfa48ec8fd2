"""The local Lambda Invoke endpoint, driven by a real boto3 Lambda client."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from coalmine.core.errors import InvalidInput
from coalmine.integrations.lambda_local import (
    LambdaFunction,
    LocalLambda,
    load_functions,
    parse_functions,
    serve_in_thread,
)
from tests.integrations.lambda_fns import echo, gate

ROOT = Path(__file__).resolve().parents[2]
PKG = "tests.integrations.lambda_fns"
FUNCTIONS = {
    "greet": LambdaFunction(
        "greet",
        {"1": f"{PKG}.echo:handler", "2": f"{PKG}.echo_v2:handler"},
        {"live": "1"},
        memory=256,
    ),
    "broken": LambdaFunction("broken", {"1": f"{PKG}.echo:fail"}),
    "sleepy": LambdaFunction("sleepy", {"1": f"{PKG}.echo:slow"}, timeout=0.2),
    "single": LambdaFunction("single", {"1": f"{PKG}.echo:slow"}, concurrency=1),
    "odd": LambdaFunction("odd", {"1": f"{PKG}.echo:unmarshallable"}),
}
COMMAND = [sys.executable, "-m", "coalmine.cli", "lambda", "local"]
NO_RETRY = Config(retries={"max_attempts": 1, "mode": "standard"})


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[tuple[LocalLambda, str]]:
    app = LocalLambda(FUNCTIONS)
    with serve_in_thread(app) as url:
        yield app, url


@pytest.fixture
def client(endpoint: tuple[LocalLambda, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """A boto3 client that finds the endpoint the standard way, AWS_ENDPOINT_URL_LAMBDA."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", endpoint[1])
    return boto3.client("lambda", config=NO_RETRY)


def _invoke(client: Any, **kwargs: Any) -> tuple[dict[str, Any], Any]:
    response = client.invoke(**kwargs)
    return response, json.loads(response["Payload"].read() or b"null")


def test_invoke_by_name_and_qualifier_runs_that_version(client: Any) -> None:
    response, body = _invoke(client, FunctionName="greet", Qualifier="2", Payload=b'{"a": 1}')
    assert response["StatusCode"] == 200
    assert response["ExecutedVersion"] == "2"
    assert "FunctionError" not in response
    assert body["v2"] is True
    assert body["event"] == {"a": 1}
    assert body["function_name"] == "greet"
    assert body["function_version"] == "2"
    assert body["invoked_function_arn"] == "arn:aws:lambda:us-east-1:123456789012:function:greet:2"
    assert body["memory"] == 256
    assert 0 < body["remaining_ms"] <= 3000
    assert body["request_id"] == response["ResponseMetadata"]["RequestId"]


def test_versions_have_their_own_module_globals(client: Any) -> None:
    _, first = _invoke(client, FunctionName="greet", Qualifier="1")
    _, again = _invoke(client, FunctionName="greet", Qualifier="1")
    assert again["calls"] == first["calls"] + 1
    before = echo.calls
    _invoke(client, FunctionName="greet", Qualifier="1")
    assert echo.calls == before  # the test's own import is another namespace


def test_function_name_forms_and_aliases(client: Any) -> None:
    arn = "arn:aws:lambda:eu-west-1:210987654321:function:greet"
    cases = [
        ({"FunctionName": f"{arn}:2"}, "2", f"{arn}:2"),
        ({"FunctionName": arn, "Qualifier": "live"}, "1", f"{arn}:live"),
        ({"FunctionName": "greet:live"}, "1", "function:greet:live"),
        ({"FunctionName": "210987654321:function:greet:1"}, "1", "210987654321:function:greet:1"),
        ({"FunctionName": "greet"}, "$LATEST", "function:greet"),
        ({"FunctionName": "greet", "Qualifier": "$LATEST"}, "$LATEST", "greet:$LATEST"),
    ]
    for kwargs, version, arn_end in cases:
        response, body = _invoke(client, **kwargs)
        assert response["ExecutedVersion"] == version, kwargs
        assert body["function_version"] == version
        assert body["invoked_function_arn"].endswith(arn_end), kwargs
    # $LATEST without a version of that name is the last one listed
    assert _invoke(client, FunctionName="greet")[1]["v2"] is True


def test_unknown_function_or_qualifier_raise_resource_not_found(client: Any) -> None:
    with pytest.raises(client.exceptions.ResourceNotFoundException, match="greetz"):
        client.invoke(FunctionName="greetz")
    with pytest.raises(client.exceptions.ResourceNotFoundException, match="greet:9"):
        client.invoke(FunctionName="greet", Qualifier="9")
    with pytest.raises(client.exceptions.InvalidParameterValueException, match="qualifier"):
        client.invoke(FunctionName="greet:1", Qualifier="2")
    with pytest.raises(client.exceptions.InvalidRequestContentException, match="json"):
        client.invoke(FunctionName="greet", Payload=b"{not json")


def test_handler_exception_is_an_unhandled_function_error(client: Any) -> None:
    response, body = _invoke(client, FunctionName="broken", Payload=b'{"order": 7}')
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "ValueError"
    assert body["errorMessage"] == "bad order 7"
    assert any("echo.py" in line for line in body["stackTrace"])


def test_timeout_is_sandbox_timedout(client: Any) -> None:
    response, body = _invoke(client, FunctionName="sleepy", Payload=b'{"wait": 2}')
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 0.20 seconds" in body["errorMessage"]


def test_unserialisable_result_is_a_marshal_error(client: Any) -> None:
    response, body = _invoke(client, FunctionName="odd")
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.MarshalError"


def test_concurrency_limit_raises_too_many_requests(
    client: Any, endpoint: tuple[LocalLambda, str]
) -> None:
    gate.release.clear()
    app = endpoint[0]
    before = app.invocations
    try:
        # the first (Event) invocation is queued, so it does not take the only slot
        assert client.invoke(FunctionName="single", InvocationType="Event")["StatusCode"] == 202
        done: list[dict[str, Any]] = []
        first = threading.Thread(
            target=lambda: done.append(client.invoke(FunctionName="single", Payload=b"{}"))
        )
        first.start()
        while app.invocations < before + 2:  # the synchronous one holds the slot
            first.join(0.01)
        with pytest.raises(client.exceptions.TooManyRequestsException) as caught:
            client.invoke(FunctionName="single")
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert caught.value.response["Reason"] == (
            "ReservedFunctionConcurrentInvocationLimitExceeded"
        )
    finally:
        gate.release.set()
    first.join(5)
    assert json.loads(done[0]["Payload"].read()) == "late"


def test_client_context_reaches_the_handler(client: Any) -> None:
    cc = base64.b64encode(json.dumps({"custom": {"baggage": "x=1"}}).encode()).decode()
    _, body = _invoke(client, FunctionName="greet", Qualifier="1", ClientContext=cc)
    assert body["custom"] == {"baggage": "x=1"}
    with pytest.raises(client.exceptions.InvalidRequestContentException):
        client.invoke(FunctionName="greet", ClientContext="!!notbase64")


def test_event_and_dry_run_invocations(client: Any, endpoint: tuple[LocalLambda, str]) -> None:
    assert client.invoke(FunctionName="greet", InvocationType="DryRun")["StatusCode"] == 204
    before = endpoint[0].invocations
    response = client.invoke(FunctionName="greet", Qualifier="live", InvocationType="Event")
    assert response["StatusCode"] == 202
    assert response["Payload"].read() == b""
    assert endpoint[0].invocations == before + 1


def test_endpoint_url_argument_works_too(endpoint: tuple[LocalLambda, str]) -> None:
    client = boto3.client("lambda", endpoint_url=endpoint[1], config=NO_RETRY)
    _, body = _invoke(client, FunctionName="greet", Qualifier="live")
    assert body["function_version"] == "1"


def test_config_file_formats(tmp_path: Path) -> None:
    own = tmp_path / "functions.yaml"
    own.write_text(
        "functions:\n  greet:\n    versions: {1: pkg.a:handler, 2: pkg.b:handler}\n"
        "    aliases: {live: 1}\n    timeout: 5\n    concurrency: 2\n"
    )
    fn = load_functions(own)["greet"]
    assert dict(fn.versions) == {"1": "pkg.a:handler", "2": "pkg.b:handler"}
    assert fn.resolve("live") == "1"
    assert (fn.timeout, fn.concurrency) == (5.0, 2)
    app_spec = load_functions(ROOT / "examples/food_ordering/coalmine.yaml")
    assert set(app_spec) == {"place-order", "kitchen", "notify-user"}
    assert app_spec["place-order"].resolve("live") == "v1"
    assert app_spec["place-order"].resolve("v2") == "v2"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({}, "'functions' mapping"),
        ({"functions": {}}, "no functions"),
        ({"functions": {"f": {"versions": {"1": "http://x/y"}}}}, "not a local handler"),
        ({"functions": {"f": {"versions": {"1": "a:b"}, "aliases": {"l": "2"}}}}, "not a version"),
        ({"functions": {"f": {"versions": {"1": "a:b"}, "timeout": 0}}}, "timeout"),
        ({"functions": {"f": {"versions": {"1": "a:b"}, "concurrency": 0}}}, "concurrency"),
        ({"functions": {"f": {"versions": {"1": "a:b"}, "timout": 1}}}, "unknown key"),
        ({"functions": {"bad name": {"versions": {"1": "a:b"}}}}, "invalid function name"),
        ({"app": "a", "functions": {"f": {"versions": {"v1": "a:b"}, "current": "v9"}}}, "v9"),
    ],
)
def test_bad_config_says_what_is_wrong(doc: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_functions(doc)


def test_command_serves_and_prints_the_endpoint_variable(tmp_path: Path) -> None:
    config = tmp_path / "functions.yaml"
    config.write_text(f"functions:\n  greet:\n    versions: {{1: {PKG}.echo:handler}}\n")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    proc = subprocess.Popen(
        [*COMMAND, "-f", str(config), "--port", "0", "--app-dir", str(ROOT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("export AWS_ENDPOINT_URL_LAMBDA=http://127.0.0.1:"), line
        url = line.split("=", 1)[1]
        client = boto3.client("lambda", endpoint_url=url, config=NO_RETRY)
        _, body = _invoke(client, FunctionName="greet", Qualifier="1", Payload=b'{"k": "v"}')
        assert body["event"] == {"k": "v"}
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_command_rejects_a_bad_file_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "functions.yaml"
    config.write_text("functions:\n  greet:\n    versions: {1: nope}\n")
    done = subprocess.run(
        [*COMMAND, "-f", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "not a local handler" in done.stderr or "invalid target" in done.stderr
