"""Apps, functions and versions: create, list, get; immutability; current versions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from coalmine.controller.schemas import ReleaseCreate, ReleaseSettings, VersionCreate
from coalmine.core.errors import Conflict, InvalidInput, NotFound
from coalmine.store.models import AppRow
from tests.service import ACTOR, SQLITE_ONLY, T0, Env, open_env, row_counts


@pytest.fixture
def env(database_url: str) -> Iterator[Env]:
    with open_env(database_url) as e:
        yield e


def kinds(env: Env) -> list[str]:
    return [e.kind for e in env.svc.audit.events()]


def test_apps_functions_and_versions(env: Env) -> None:
    svc = env.svc
    got: list[str] = []
    env.feed.subscribe(got.append)

    created = svc.catalog.create_app(
        "shop", ACTOR, ReleaseSettings(strategy="AllAtOnce", webhooks=["https://hooks.example/x"])
    )
    assert created.name == "shop"
    assert created.revision == 1
    assert created.created_at == T0
    assert created.functions == []
    assert created.active_release is None
    assert created.settings.strategy == "AllAtOnce"
    assert got == ["shop"]

    svc.catalog.create_app("blog", ACTOR)
    assert [a.name for a in svc.catalog.list_apps()] == ["blog", "shop"]
    assert svc.catalog.get_app("blog").settings == ReleaseSettings()

    env.clock.advance(5)
    app = svc.catalog.add_function("shop", "cart", ACTOR)
    assert [(f.name, f.current_version, f.versions) for f in app.functions] == [("cart", None, [])]
    svc.catalog.add_function("shop", "aaa", ACTOR)
    assert [f.name for f in svc.catalog.get_app("shop").functions] == ["aaa", "cart"]  # by name

    v1 = svc.catalog.register_version(
        "shop", "cart", VersionCreate(name="v1", target="shop.cart:h"), ACTOR
    )
    assert (v1.name, v1.target, v1.created_at) == ("v1", "shop.cart:h", T0 + 5)
    url = "https://cart.example.com/v2"
    svc.catalog.register_version("shop", "cart", VersionCreate(name="v2", target=url), ACTOR)
    arn = "arn:aws:lambda:us-east-1:123456789012:function:cart:7"
    svc.catalog.register_version("shop", "cart", VersionCreate(name="v3", target=arn), ACTOR)
    cart = next(f for f in svc.catalog.get_app("shop").functions if f.name == "cart")
    assert [(v.name, v.target) for v in cart.versions] == [
        ("v1", "shop.cart:h"),
        ("v2", url),
        ("v3", arn),
    ]

    app = svc.catalog.set_current("shop", "cart", "v1", ACTOR)
    assert next(f for f in app.functions if f.name == "cart").current_version == "v1"
    assert svc.snapshots.revision("shop") == app.revision == 7  # every change bumped it
    assert kinds(env)[-7:] == [
        "app_created",
        "function_added",
        "function_added",
        "version_registered",
        "version_registered",
        "version_registered",
        "current_set",
    ]
    last = svc.audit.events(app="shop")[-1]
    assert (last.actor, last.message, last.data) == (
        ACTOR,
        "cart now runs v1",
        {"function": "cart", "version": "v1"},
    )
    assert got.count("shop") == 7


@SQLITE_ONLY
def test_lookups_of_unknown_things_are_not_found(env: Env) -> None:
    svc = env.svc
    with pytest.raises(NotFound, match="no app named 'nope'"):
        svc.catalog.get_app("nope")
    with pytest.raises(NotFound, match="no app named"):
        svc.catalog.add_function("nope", "cart", ACTOR)
    svc.catalog.create_app("shop", ACTOR)
    with pytest.raises(NotFound, match="no function named 'cart'"):
        svc.catalog.register_version("shop", "cart", VersionCreate(name="v1", target="m:h"), ACTOR)
    with pytest.raises(NotFound, match="no function named 'cart'"):
        svc.catalog.set_current("shop", "cart", "v1", ACTOR)
    with pytest.raises(NotFound, match="no release with id 'shop-9'"):
        svc.releases.get("shop-9")
    with pytest.raises(NotFound):
        svc.snapshots.revision("nope")


def test_conflicts_and_invalid_input_write_nothing(env: Env) -> None:
    svc = env.svc
    svc.catalog.create_app("shop", ACTOR)
    svc.catalog.add_function("shop", "cart", ACTOR)
    svc.catalog.register_version(
        "shop", "cart", VersionCreate(name="v1", target="shop.cart:h"), ACTOR
    )
    before = row_counts(env.store)
    revision = svc.snapshots.revision("shop")

    with pytest.raises(Conflict, match="app 'shop' already exists"):
        svc.catalog.create_app("shop", ACTOR)
    with pytest.raises(Conflict, match="already has a function named 'cart'"):
        svc.catalog.add_function("shop", "cart", ACTOR)
    with pytest.raises(Conflict, match="versions are immutable"):
        svc.catalog.register_version(
            "shop", "cart", VersionCreate(name="v1", target="shop.cart:other"), ACTOR
        )
    with pytest.raises(Conflict, match="already registered"):
        svc.catalog.register_version(
            "shop", "cart", VersionCreate(name="v1", target="shop.cart:h"), ACTOR
        )
    with pytest.raises(InvalidInput, match="invalid app name"):
        svc.catalog.create_app("Shop!", ACTOR)
    with pytest.raises(InvalidInput, match="invalid function name"):
        svc.catalog.add_function("shop", "-cart", ACTOR)
    with pytest.raises(InvalidInput, match="unknown strategy"):
        svc.catalog.create_app("blog", ACTOR, ReleaseSettings(strategy="Sometimes"))
    with pytest.raises(NotFound, match="not registered"):
        svc.catalog.set_current("shop", "cart", "v9", ACTOR)

    assert row_counts(env.store) == before
    assert svc.snapshots.revision("shop") == revision
    assert svc.catalog.get_app("shop").functions[0].versions[0].target == "shop.cart:h"


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("not a target", "invalid target"),
        ("http://", "invalid HTTP target"),
        ("https://host/with space", "invalid HTTP target"),
        ("arn:aws:lambda:us-east-1:123:function:cart", "invalid Lambda target"),
        ("module-with-dash:handler", "invalid target"),
    ],
)
def test_invalid_targets_are_invalid_input(sqlite_url: str, target: str, problem: str) -> None:
    with open_env(sqlite_url) as env:
        env.svc.catalog.create_app("shop", ACTOR)
        env.svc.catalog.add_function("shop", "cart", ACTOR)
        with pytest.raises(InvalidInput, match=problem):
            env.svc.catalog.register_version(
                "shop", "cart", VersionCreate(name="v1", target=target), ACTOR
            )
        assert env.svc.catalog.get_app("shop").functions[0].versions == []


@pytest.mark.parametrize("name", ["-v1", "v 1", "v1/x", "v" * 65])
def test_invalid_version_names_are_refused_by_the_service(sqlite_url: str, name: str) -> None:
    """The schema refuses these too; the service must not rely on it (other callers)."""
    with open_env(sqlite_url) as env:
        env.svc.catalog.create_app("shop", ACTOR)
        env.svc.catalog.add_function("shop", "cart", ACTOR)
        before = row_counts(env.store)
        with pytest.raises(InvalidInput, match="invalid version name"):
            env.svc.catalog.register_version(
                "shop", "cart", VersionCreate.model_construct(name=name, target="m:h"), ACTOR
            )
        assert row_counts(env.store) == before
        with pytest.raises(ValueError, match="pattern"):
            VersionCreate(name=name, target="m:h")


@SQLITE_ONLY
def test_set_current_is_refused_during_an_active_release(env: Env) -> None:
    svc = env.svc
    svc.catalog.create_app("shop", ACTOR)
    svc.catalog.add_function("shop", "cart", ACTOR)
    for name in ("v1", "v2"):
        svc.catalog.register_version(
            "shop", "cart", VersionCreate(name=name, target="m:h" + name), ACTOR
        )
    svc.catalog.set_current("shop", "cart", "v1", ACTOR)
    release = svc.releases.start("shop", ReleaseCreate(candidate={"cart": "v2"}), ACTOR)
    assert svc.catalog.get_app("shop").active_release == release.id
    before = row_counts(env.store)
    with pytest.raises(Conflict, match=f"active release {release.id}"):
        svc.catalog.set_current("shop", "cart", "v2", ACTOR)
    with pytest.raises(NotFound, match="not registered"):  # checked first
        svc.catalog.set_current("shop", "cart", "v7", ACTOR)
    assert row_counts(env.store) == before
    cart = svc.catalog.get_app("shop").functions[0]
    assert cart.current_version == "v1"


def test_concurrent_duplicate_app_is_a_conflict_not_an_integrity_error(env: Env) -> None:
    """The unique name is enforced by the database too (the check-then-insert can race)."""
    with env.store.transaction() as s:
        s.add(AppRow(name="shop", settings={}, created_at=T0))
    with pytest.raises(Conflict, match="already exists"):
        env.svc.catalog.create_app("shop", ACTOR)
