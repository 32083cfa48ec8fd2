"""A ``versions: published`` function with no ``current`` starts from the version its alias
routes to (``release.lambda_alias``): what runs now, read from AWS (here its twins)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from coalmine.controller.memory import MemoryLambdaAliases, MemoryLambdaVersions
from coalmine.controller.plane import ControlPlane
from coalmine.controller.schemas import AppSpec, ReleaseCreate
from coalmine.core.errors import InvalidInput
from coalmine.store.db import open_store
from tests.controller import ACTOR


@pytest.fixture
def twins() -> tuple[MemoryLambdaVersions, MemoryLambdaAliases]:
    versions, aliases = MemoryLambdaVersions(), MemoryLambdaAliases()
    for name in ("place-order", "notify-user"):
        versions.create(name)
        versions.publish(name, 3)
        aliases.publish(versions.arn(name), "1", "2", "3")
    aliases.create_alias(versions.arn("place-order"), "live", "2")  # notify-user has none
    return versions, aliases


@pytest.fixture
def plane(
    sqlite_url: str, twins: tuple[MemoryLambdaVersions, MemoryLambdaAliases]
) -> Iterator[ControlPlane]:
    store = open_store(sqlite_url)
    yield ControlPlane(store, lambda_versions=twins[0], lambda_aliases=twins[1])
    store.dispose()


def spec(*, alias: str | None = "live", current: str | None = None) -> AppSpec:
    function = {"versions": "published", "lambda_function": "place-order"}
    if current is not None:
        function["current"] = current
    return AppSpec.model_validate(
        {
            "app": "food",
            "functions": {
                "place-order": function,
                "notify-user": {"versions": "published", "lambda_function": "notify-user"},
            },
            "release": {"lambda_alias": alias},
        }
    )


def test_the_alias_names_the_current_version_of_a_function_with_none(plane: ControlPlane) -> None:
    applied = plane.catalog.apply(spec(), ACTOR)
    assert "set place-order current version 2 (alias live of place-order routes to it)" in (
        applied.changes
    )
    functions = {f.name: f.current_version for f in plane.catalog.get_app("food").functions}
    assert functions == {"place-order": "2", "notify-user": None}, "no alias: no guess"
    # a release of notify-user then says what to do
    with pytest.raises(InvalidInput, match="has no current version yet"):
        plane.releases.start("food", ReleaseCreate(candidate={"notify-user": "3"}), ACTOR)
    started = plane.releases.start("food", ReleaseCreate(candidate={"place-order": "3"}), ACTOR)
    assert started.baseline["place-order"] == "2"


def test_the_file_and_a_current_already_set_win_over_the_alias(
    plane: ControlPlane, twins: tuple[MemoryLambdaVersions, MemoryLambdaAliases]
) -> None:
    plane.catalog.apply(spec(current="1"), ACTOR)
    current = {f.name: f.current_version for f in plane.catalog.get_app("food").functions}
    assert current["place-order"] == "1"
    twins[1].create_alias(twins[0].arn("place-order"), "live", "3")
    again = plane.catalog.apply(spec(), ACTOR)  # no current in the file now: the alias moved
    assert not again.changed, "a current version changes through releases, not apply"


def test_without_a_lambda_alias_setting_no_alias_is_read(
    plane: ControlPlane, twins: tuple[MemoryLambdaVersions, MemoryLambdaAliases]
) -> None:
    plane.catalog.apply(spec(alias=None), ACTOR)
    assert twins[1].calls == []
    assert {f.current_version for f in plane.catalog.get_app("food").functions} == {None}
