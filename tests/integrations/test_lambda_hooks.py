"""`LambdaHookRunner`: real hook functions behind the local Invoke endpoint (pass, answer
Failed, raise, time out, missing), the Invoke request on moto, and the verdict rule."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalmine.controller.hooks import hook_payload
from coalmine.controller.schemas import HookSpec
from coalmine.core.machine import Hook
from coalmine.core.ports import HookOutcome
from coalmine.core.records import HookConfig
from coalmine.integrations.lambda_hooks import LambdaHookRunner, verdict
from coalmine.integrations.lambda_local import LocalLambda
from tests.aws import ACCOUNT, REGION, aws_environment
from tests.aws.hook_functions import function_name, hook_functions
from tests.controller import hook_release as a_release

BEFORE = Hook.BEFORE_ALLOW_TRAFFIC
AFTER = Hook.AFTER_ALLOW_TRAFFIC


def lambda_hook(function: str, **options: Any) -> HookConfig:
    return HookSpec.model_validate({"lambda": function, **options}).config()


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[LocalLambda]:
    with hook_functions() as local:
        yield local


@pytest.fixture
def runner(endpoint: LocalLambda) -> Iterator[LambdaHookRunner]:
    with LambdaHookRunner(payload=hook_payload, sleep=Sleeps()) as r:
        yield r


def run(runner: LambdaHookRunner, handler: str, hook: Hook = BEFORE, **options: Any) -> HookOutcome:
    spec = lambda_hook(function_name(handler), **options)
    return runner.run(a_release(**{str(hook): spec}), hook, spec)


# -- against real handlers on the local endpoint ----------------------------------------


def test_a_function_that_answers_anything_but_failed_passes(runner: LambdaHookRunner) -> None:
    assert run(runner, "passes") == HookOutcome(
        True, "before_allow_traffic hook lambda check-passes passed"
    )


def test_an_answer_failed_fails_with_its_reason_and_is_not_retried(
    runner: LambdaHookRunner, endpoint: LocalLambda
) -> None:
    before = endpoint.invocations
    outcome = run(runner, "fails", AFTER, retries=3)
    assert outcome == HookOutcome(
        False,
        "after_allow_traffic hook lambda check-fails answered Failed:"
        " smoke test of cart v2: 3 of 20 orders failed",
    )
    assert endpoint.invocations - before == 1, "a verdict is not retried"


def test_codedeploys_spelling_of_failed_fails_too(runner: LambdaHookRunner) -> None:
    outcome = run(runner, "codedeploy_failed")
    assert not outcome.passed
    assert outcome.detail.endswith("answered Failed: no reason given")


def test_a_function_error_fails_with_the_functions_message(
    runner: LambdaHookRunner, endpoint: LocalLambda
) -> None:
    before = endpoint.invocations
    outcome = run(runner, "raises", retries=2)
    assert outcome == HookOutcome(
        False,
        "before_allow_traffic hook lambda check-raises failed"
        " (RuntimeError: cannot reach the orders table (before_allow_traffic))",
    )
    assert endpoint.invocations - before == 1


def test_no_answer_within_the_timeout_is_a_failed_attempt_retried(
    endpoint: LocalLambda,
) -> None:
    sleeps = Sleeps()
    before = endpoint.invocations
    with LambdaHookRunner(payload=hook_payload, backoff=0.05, sleep=sleeps) as runner:
        outcome = run(runner, "slow", timeout=0.2, retries=1)
    assert outcome == HookOutcome(
        False, "before_allow_traffic hook lambda check-slow timed out (0.2s) after 2 attempts"
    )
    assert endpoint.invocations - before == 2
    assert sleeps == [0.05]


def test_an_invoke_that_fails_is_retried_with_awss_words(runner: LambdaHookRunner) -> None:
    outcome = run(runner, "not_there", retries=1)
    assert not outcome.passed
    assert outcome.detail.startswith(
        "before_allow_traffic hook lambda check-not-there could not be invoked"
        " (ResourceNotFoundException: "
    )
    assert outcome.detail.endswith(" after 2 attempts")


def test_a_qualified_arn_in_its_region_is_invoked(runner: LambdaHookRunner) -> None:
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function_name('fails')}:live"
    spec = lambda_hook(arn)
    outcome = runner.run(a_release(before_allow_traffic=spec), BEFORE, spec)
    assert outcome.detail == (
        f"before_allow_traffic hook lambda {arn} answered Failed:"
        " smoke test of cart v2: 3 of 20 orders failed"
    )


# -- the Invoke request, on moto ----------------------------------------------------------


def test_the_invoke_request_carries_the_hook_payload_synchronously(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    moto = pytest.importorskip("moto")
    monkeypatch.delenv("AWS_ENDPOINT_URL_LAMBDA", raising=False)  # AWS itself, moto's
    import boto3
    from moto.awslambda_simple.models import lambda_simple_backends

    from tests.aws.moto_lambda import create_function, publish

    with aws_environment(), moto.mock_aws(config={"lambda": {"use_docker": False}}):
        create_function("pre-traffic")
        [arn] = publish("pre-traffic")
        client = boto3.client("lambda", region_name=REGION)
        sent: list[tuple[str, dict[str, Any], bytes]] = []
        client.meta.events.register(
            "before-send.lambda.Invoke",
            lambda request, **_: sent.append((request.url, dict(request.headers), request.body)),
        )
        backend = lambda_simple_backends[ACCOUNT][REGION]
        backend.lambda_simple_results_queue.append(json.dumps({"status": "failed"}))
        spec = lambda_hook(arn, retries=2)
        release = a_release(before_allow_traffic=spec)
        with LambdaHookRunner(payload=hook_payload, client=client) as runner:
            outcome = runner.run(release, BEFORE, spec)
    assert outcome == HookOutcome(
        False, f"before_allow_traffic hook lambda {arn} answered Failed: no reason given"
    )
    [(url, headers, body)] = sent
    assert url.endswith(
        "/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction"
        "%3Apre-traffic%3A1/invocations"
    )
    assert headers["X-Amz-Invocation-Type"] == b"RequestResponse"
    assert json.loads(body) == hook_payload(release, BEFORE, 1)
    assert json.loads(body)["release"]["hooks"] == {
        "before_allow_traffic": {"lambda": arn, "timeout": 10.0, "retries": 2}
    }


# -- the verdict rule ----------------------------------------------------------------------


@given(st.sampled_from(["failed", "Failed", "FAILED", "fAiLeD"]), st.text(max_size=40))
def test_status_failed_in_any_case_fails_with_the_reason(status: str, reason: str) -> None:
    got = verdict(None, json.dumps({"status": status, "reason": reason}).encode())
    assert not got.passed
    assert got.final
    assert got.problem == f"answered Failed: {reason.strip() or 'no reason given'}"


@given(
    st.one_of(
        st.none(),
        st.integers(),
        st.text(),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(
            st.text(max_size=8), st.text(max_size=8).filter(lambda s: s.lower() != "failed")
        ),
    )
)
def test_any_other_answer_passes(answer: object) -> None:
    assert verdict(None, json.dumps(answer).encode()).passed


def test_a_function_error_without_a_document_keeps_its_text() -> None:
    got = verdict("Unhandled", b"out of memory")
    assert (got.passed, got.final, got.problem) == (False, True, "failed (out of memory)")
