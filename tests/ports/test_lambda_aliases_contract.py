"""The `LambdaAliases` contract: one suite, run against the boto3 adapter (on moto) and the
in-memory twin.

Each implementation is given a function ``place-order`` with published
versions 1, 2 and 3 and an alias ``live`` on version 1, and must: read the
alias, move it, give it weights and take them away again, answer the same
alias by name and by unqualified ARN, and fail with `AliasCallFailed` that
says what AWS said for a missing alias or an unpublished version.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from coalmine.controller.memory import MemoryLambdaAliases
from coalmine.core.alias import AliasCallFailed, AliasRouting
from coalmine.core.ports import LambdaAliases
from tests.aws import ACCOUNT, REGION

NAME = "place-order"
ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{NAME}"


@dataclass
class Made:
    aliases: LambdaAliases
    function: str
    """how the test names the function: a bare name or the unqualified ARN"""


def _memory(function: str) -> Iterator[Made]:
    twin = MemoryLambdaAliases()
    twin.publish(NAME, "1", "2", "3")
    twin.create_alias(NAME, "live", "1")
    yield Made(twin, function)


def _boto3(function: str) -> Iterator[Made]:
    from coalmine.integrations.lambda_alias import Boto3LambdaAliases
    from tests.aws.lambda_aliases import mocked_lambda, publish

    with mocked_lambda() as client:
        assert publish(client, NAME, versions=3) == ARN
        adapter = Boto3LambdaAliases()
        try:
            yield Made(adapter, function)
        finally:
            adapter.close()


@pytest.fixture(
    params=[
        ("memory", NAME),
        ("memory", ARN),
        ("boto3", NAME),
        ("boto3", ARN),
    ],
    ids=lambda p: f"{p[0]}-{'arn' if p[1].startswith('arn:') else 'name'}",
)
def made(request: pytest.FixtureRequest) -> Iterator[Made]:
    kind, function = request.param
    yield from (_memory if kind == "memory" else _boto3)(function)


def test_is_a_lambda_aliases(made: Made) -> None:
    assert isinstance(made.aliases, LambdaAliases)


def test_get_reads_the_alias(made: Made) -> None:
    assert made.aliases.get(made.function, "live") == AliasRouting("1")


def test_weights_are_set_and_reset(made: Made) -> None:
    a, fn = made.aliases, made.function
    weighted = AliasRouting("1", {"2": 0.1})
    assert a.update(fn, "live", weighted).same(weighted)
    assert a.get(fn, "live").same(weighted)
    assert a.update(fn, "live", AliasRouting("1", {"2": 0.5})).same(AliasRouting("1", {"2": 0.5}))
    assert a.get(fn, "live").weights == {"2": 0.5}
    reset = a.update(fn, "live", AliasRouting("1"))
    assert reset.same(AliasRouting("1"))
    assert a.get(fn, "live").weights == {}, "no weights left after a reset"


def test_the_alias_moves_to_another_version(made: Made) -> None:
    a, fn = made.aliases, made.function
    assert a.update(fn, "live", AliasRouting("3")) == AliasRouting("3")
    assert a.get(fn, "live") == AliasRouting("3")


def test_name_and_arn_name_the_same_alias(made: Made) -> None:
    made.aliases.update(made.function, "live", AliasRouting("2"))
    assert made.aliases.get(NAME, "live") == AliasRouting("2")
    assert made.aliases.get(ARN, "live") == AliasRouting("2")


def test_a_missing_alias_fails_with_aws_s_error(made: Made) -> None:
    with pytest.raises(AliasCallFailed, match=r"ResourceNotFoundException: .*canary"):
        made.aliases.get(made.function, "canary")
    with pytest.raises(AliasCallFailed, match=r"ResourceNotFoundException: .*canary"):
        made.aliases.update(made.function, "canary", AliasRouting("2"))


def test_an_unpublished_version_fails_and_changes_nothing(made: Made) -> None:
    with pytest.raises(AliasCallFailed, match="ResourceNotFoundException"):
        made.aliases.update(made.function, "live", AliasRouting("9"))
    assert made.aliases.get(made.function, "live") == AliasRouting("1")
