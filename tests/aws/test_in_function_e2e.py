"""End to end over the local Lambda Invoke endpoint, no gateway: an HTTP API entry function
with in-function routing calls another function through an instrumented boto3 client; at 20%
raised to 60% mid-run every chain runs one channel's versions end to end."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest

from coalmine.controller.schemas import ReleaseCreate
from coalmine.core.bucketing import bucket
from coalmine.core.machine import Tick
from coalmine.gateway.server import PROTOCOL
from coalmine.integrations.lambda_local import LambdaFunction, LocalLambda, serve_in_thread
from tests.aws.fake_lambda import APP, arn, close_opened, fake_aws_env, http_event
from tests.sdk import ControlPlane

SPEC = {
    "app": APP,
    "functions": {
        "api": {"versions": {"v1": arn("api", "1"), "v2": arn("api", "2")}, "current": "v1"},
        "notify-user": {
            "versions": {"v1": arn("notify-user", "1"), "v2": arn("notify-user", "2")},
            "current": "v1",
        },
    },
    "release": {"strategy": "20%:1h, 60%:1h, 100%"},
}
KEYS = "t1:sdk-test-signing-secret-0123456789"


def _functions() -> dict[str, LambdaFunction]:
    ref = "tests.aws.lambda_chain:"
    return {
        name: LambdaFunction(
            name, {"1": ref + handler, "2": ref + handler}, aliases={"live": "1"}, timeout=30
        )
        for name, handler in (("api", "api"), ("notify-user", "notify_user"))
    }


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[ControlPlane, Any]]:
    plane = ControlPlane(f"sqlite:///{tmp_path / 'plane.db'}")
    plane.start()
    plane.seed(SPEC)
    local = LocalLambda(_functions())
    try:
        with (
            serve_in_thread(local, http=PROTOCOL) as url,
            fake_aws_env(
                AWS_ENDPOINT_URL_LAMBDA=url,
                COALMINE_URL=plane.url,
                COALMINE_SDK_KEY=plane.sdk_key(),
                COALMINE_SIGNING_KEYS=KEYS,
                COALMINE_MAX_AGE="0",  # every invocation asks (a 304 when unchanged): no waiting
            ),
        ):
            lam = boto3.client("lambda")
            yield plane, lam
            lam.close()
    finally:
        close_opened()
        local.close()
        plane.stop()


def test_chains_run_one_channel_end_to_end_while_exposure_rises(
    stack: tuple[ControlPlane, Any],
) -> None:
    plane, lam = stack
    rel = plane.service.releases.start(
        APP, ReleaseCreate(candidate={"api": "v2", "notify-user": "v2"}), "e2e"
    )
    plane.service.releases.advance(rel.id, Tick(time.time()))
    assert plane.service.releases.get(rel.id).exposure == 2000
    salt = plane.snapshot(APP).state.release.salt  # type: ignore[union-attr]
    users = [f"user-{i}" for i in range(60)]
    never = [u for u in users if bucket(salt, u) >= 6000]
    always = [u for u in users if bucket(salt, u) < 2000]
    assert never
    assert always

    def run(user: str) -> tuple[str, dict[str, Any]]:
        answer = lam.invoke(
            FunctionName="api", Qualifier="live", Payload=json.dumps(http_event(user))
        )
        assert answer.get("FunctionError") is None, answer["Payload"].read()
        response = json.loads(answer["Payload"].read())
        assert response["statusCode"] == 200
        return user, json.loads(response["body"])

    results: list[tuple[str, dict[str, Any]]] = []
    with ThreadPoolExecutor(6) as pool:
        results += pool.map(run, users)
        later = pool.map(run, users * 2)
        plane.service.releases.advance(rel.id, Tick(time.time() + 3601))  # 20% -> 60% mid-run
        results += later
        assert plane.service.releases.get(rel.id).exposure == 6000
        results += pool.map(run, users)

    canary_at_60 = set()
    for user, body in results:
        chain = body["chain"]
        versions = {v for _fn, v in chain}
        assert [fn for fn, _ in chain] == ["api", "notify-user"]
        assert len(versions) == 1, f"{user}'s chain mixed versions: {chain}"
        assert versions == {"v2" if body["channel"] == "canary" else "v1"}
        if user in never:
            assert versions == {"v1"}, f"{user} is outside the cohort but reached {chain}"
        if user in always:
            assert versions == {"v2"}, f"{user} is in the 20% cohort but reached {chain}"
        if versions == {"v2"}:
            canary_at_60.add(user)
    # the cohort grew: users between 20% and 60% reached the candidates once raised
    grown = {u for u in users if 2000 <= bucket(salt, u) < 6000}
    assert grown
    assert grown <= canary_at_60
