"""The `LambdaVersions` contract: one suite, run against every implementation.

`MemoryLambdaVersions` (the in-memory one) and `Boto3LambdaVersions` over
moto (ListVersionsByFunction answering in pages of 50, as AWS does:
`tests.aws.moto_lambda`) must both pass it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from coalmine.controller.memory import MemoryLambdaVersions
from coalmine.core.errors import InvalidInput, UpstreamFailed
from coalmine.core.ports import LambdaVersions, PublishedVersion
from tests.aws import ACCOUNT, REGION, aws_environment

moto = pytest.importorskip("moto")


@dataclass
class Functions:
    """An implementation, and how to create and publish the functions it lists."""

    versions: LambdaVersions
    create: Callable[[str], str]
    """create a function; its unqualified ARN"""
    publish: Callable[[str, int], list[str]]
    """publish that many new versions; their qualified ARNs"""


@pytest.fixture(params=["memory", "aws"])
def functions(request: pytest.FixtureRequest) -> Iterator[Functions]:
    if request.param == "memory":
        memory = MemoryLambdaVersions(region=REGION, account=ACCOUNT)
        yield Functions(
            memory,
            memory.create,
            lambda name, n: [v.arn for v in memory.publish(name, n)],
        )
        return
    from coalmine.integrations.lambda_versions import Boto3LambdaVersions
    from tests.aws.moto_lambda import aws_version_listing, create_function, publish

    with (
        aws_environment(),
        moto.mock_aws(config={"lambda": {"use_docker": False}}),
        aws_version_listing(),
    ):
        yield Functions(Boto3LambdaVersions(), create_function, publish)


def test_it_is_a_lambda_versions_port(functions: Functions) -> None:
    assert isinstance(functions.versions, LambdaVersions)


def test_every_published_version_in_order_without_latest(functions: Functions) -> None:
    arn = functions.create("place-order")
    published = functions.publish("place-order", 3)
    got = functions.versions.published("place-order")
    assert got == [
        PublishedVersion("1", f"{arn}:1"),
        PublishedVersion("2", f"{arn}:2"),
        PublishedVersion("3", f"{arn}:3"),
    ]
    assert [v.arn for v in got] == published
    assert all(isinstance(v, tuple) and len(v) == 2 for v in got), "(version, qualified ARN)"


def test_more_than_a_page_of_versions_are_all_listed(functions: Functions) -> None:
    """AWS answers 50 versions a page: the 51st and later come only by following the marker."""
    arn = functions.create("notify-user")
    functions.publish("notify-user", 123)
    got = functions.versions.published("notify-user")
    assert [v.version for v in got] == [str(n) for n in range(1, 124)]
    assert got[-1] == PublishedVersion("123", f"{arn}:123")


def test_by_name_or_by_arn_the_same_versions(functions: Functions) -> None:
    arn = functions.create("checkout")
    functions.publish("checkout", 2)
    assert functions.versions.published(arn) == functions.versions.published("checkout")


def test_a_function_never_published_has_no_versions(functions: Functions) -> None:
    functions.create("draft")
    assert functions.versions.published("draft") == []


def test_a_missing_function_is_bad_input_in_aws_words(functions: Functions) -> None:
    with pytest.raises(InvalidInput) as caught:
        functions.versions.published("no-such-function")
    message = str(caught.value)
    assert "'no-such-function'" in message
    assert "ResourceNotFoundException" in message


@pytest.mark.parametrize("ref", ["place-order:3", "arn:aws:lambda:us-east-1:1:function:x", "a b"])
def test_a_qualified_or_malformed_reference_says_what_to_give(
    functions: Functions, ref: str
) -> None:
    functions.create("place-order")
    with pytest.raises(InvalidInput, match="Lambda function"):
        functions.versions.published(ref)


def test_an_outage_is_upstream_failed_not_bad_input() -> None:
    """Only the twin can be told to fail; `tests/aws/test_lambda_versions.py` does it for AWS."""
    memory = MemoryLambdaVersions()
    memory.create("f")
    memory.failure = UpstreamFailed("Lambda function 'f': AWS answered ThrottlingException: slow")
    with pytest.raises(UpstreamFailed, match="ThrottlingException"):
        memory.published("f")
