"""apply(): a coalmine.yaml document made true, idempotently, all or nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from coalmine.controller.schemas import AppSpec, FunctionSpec, ReleaseSettings
from coalmine.core.errors import Conflict, InvalidInput
from tests.service import ACTOR, APP, SQLITE_ONLY, STRATEGY, Env, open_env, row_counts, shop_spec


@pytest.fixture
def env(database_url: str) -> Iterator[Env]:
    with open_env(database_url) as e:
        yield e


def test_apply_creates_everything_then_is_idempotent(env: Env) -> None:
    svc = env.svc
    got: list[str] = []
    env.feed.subscribe(got.append)
    spec = shop_spec()

    dry = svc.catalog.apply(spec, ACTOR, dry_run=True)
    assert dry.dry_run
    assert dry.changed
    assert row_counts(env.store) == dict.fromkeys(
        ("apps", "functions", "versions", "releases", "events"), 0
    )
    assert got == []  # a dry run tells no one

    result = svc.catalog.apply(spec, ACTOR)
    assert not result.dry_run
    assert result.changed
    assert result.changes == dry.changes  # the dry run reported exactly what apply did
    assert result.changes == [
        "create app shop",
        "create function cart",
        "register cart v1 -> shop.cart:handler",
        "register cart v2 -> https://cart-v2.example.com/invoke",
        "register cart v3 -> arn:aws:lambda:eu-west-1:123456789012:function:cart:3",
        "set cart current version v1",
        "create function notify",
        "register notify v1 -> shop.notify:handler",
        "create function pay",
        "register pay v1 -> shop.pay:handler",
        "register pay v2 -> shop.pay:handler_v2",
        "set pay current version v1",
    ]
    assert got == ["shop"]

    app = svc.catalog.get_app(APP)
    assert {f.name: f.current_version for f in app.functions} == {
        "cart": "v1",
        "notify": None,
        "pay": "v1",
    }
    assert {f.name: [v.name for v in f.versions] for f in app.functions} == {
        "cart": ["v1", "v2", "v3"],
        "notify": ["v1"],
        "pay": ["v1", "v2"],
    }
    assert app.settings.strategy == STRATEGY
    counts = row_counts(env.store)
    assert counts["apps"] == 1
    assert counts["functions"] == 3
    assert counts["versions"] == 6
    events = svc.audit.events(app=APP)
    assert events[0].kind == "app_created"
    assert all(e.actor == ACTOR for e in events)

    again = svc.catalog.apply(spec, ACTOR)
    assert not again.changed
    assert again.changes == []
    assert row_counts(env.store) == counts
    assert svc.audit.events(app=APP) == events
    assert svc.snapshots.revision(APP) == app.revision
    assert got == ["shop"]


@SQLITE_ONLY
def test_apply_adds_to_an_existing_app_and_updates_settings(env: Env) -> None:
    svc = env.svc
    svc.catalog.apply(shop_spec(), ACTOR)
    revision = svc.snapshots.revision(APP)
    spec = shop_spec(route_mode="request")
    spec.functions["cart"].versions["v4"] = "shop.cart:handler_v4"

    dry = svc.catalog.apply(spec, ACTOR, dry_run=True)
    assert dry.changes == ["update release settings", "register cart v4 -> shop.cart:handler_v4"]
    assert svc.catalog.get_app(APP).settings.route_mode == "user"

    result = svc.catalog.apply(spec, ACTOR)
    assert result.changes == dry.changes
    app = svc.catalog.get_app(APP)
    assert app.settings.route_mode == "request"
    assert app.revision > revision
    assert [e.kind for e in svc.audit.events(app=APP)][-2:] == [
        "settings_updated",
        "version_registered",
    ]


def test_a_spec_that_changes_a_running_version_writes_nothing(env: Env) -> None:
    svc = env.svc
    svc.catalog.apply(shop_spec(), ACTOR)
    got: list[str] = []
    env.feed.subscribe(got.append)
    before = row_counts(env.store)
    events = svc.audit.events()
    revision = svc.snapshots.revision(APP)

    # Earlier in the same apply: a new function, a new version, new settings. All or nothing.
    spec = shop_spec(strategy="AllAtOnce")
    spec.functions["audit"] = FunctionSpec(versions={"v1": "shop.audit:handler"}, current="v1")
    spec.functions["cart"].versions["v4"] = "shop.cart:handler_v4"
    spec.functions["pay"].current = "v2"  # pay runs v1: that is a release's job
    with pytest.raises(Conflict, match="function pay runs v1, the file says current v2"):
        svc.catalog.apply(spec, ACTOR)

    assert row_counts(env.store) == before
    assert svc.audit.events() == events
    assert svc.snapshots.revision(APP) == revision
    app = svc.catalog.get_app(APP)
    assert app.settings.strategy == STRATEGY
    assert "audit" not in {f.name for f in app.functions}
    assert got == []


def test_a_spec_that_changes_a_registered_target_writes_nothing(env: Env) -> None:
    svc = env.svc
    svc.catalog.apply(shop_spec(), ACTOR)
    before = row_counts(env.store)
    spec = shop_spec()
    spec.functions["notify"].current = "v1"  # would be set, sorted before pay's conflict
    spec.functions["pay"].versions["v2"] = "shop.pay:rebuilt"
    with pytest.raises(Conflict, match=r"versions are\s+immutable"):
        svc.catalog.apply(spec, ACTOR)
    assert row_counts(env.store) == before
    assert {f.name: f.current_version for f in svc.catalog.get_app(APP).functions}["notify"] is None


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        (shop_spec(strategy="EveryNowAndThen"), "unknown strategy"),
        (shop_spec(strategy="10%:1m, 5%:1m, 100%"), "exposure only grows"),
        (shop_spec(strategy=[]), "at least one step"),
        (
            AppSpec(app=APP, functions={"cart": FunctionSpec(versions={"v1": "no target"})}),
            "invalid target",
        ),
        (
            AppSpec(app=APP, functions={"cart": FunctionSpec(versions={"-v1": "m:h"})}),
            "invalid version name",
        ),
        (
            AppSpec(
                app=APP, functions={"cart": FunctionSpec(versions={"v1": "m:h"}, current="v2")}
            ),
            "current version 'v2' is not among its versions",
        ),
        # the schema refuses it too; the service must not rely on that
        (AppSpec.model_construct(app="My Shop!", functions={}), "invalid app name"),
    ],
    ids=["preset", "shrinking", "empty", "target", "version", "current", "app-name"],
)
def test_invalid_specs_are_invalid_input_and_write_nothing(
    sqlite_url: str, spec: AppSpec, problem: str
) -> None:
    with open_env(sqlite_url) as env:
        env.svc.catalog.apply(shop_spec(), ACTOR)
        before = row_counts(env.store)
        with pytest.raises(InvalidInput, match=problem):
            env.svc.catalog.apply(spec, ACTOR)
        with pytest.raises(InvalidInput, match=problem):
            env.svc.catalog.apply(spec, ACTOR, dry_run=True)
        assert row_counts(env.store) == before
        assert env.svc.catalog.get_app(APP).settings.strategy == STRATEGY


def test_invalid_strategy_writes_nothing_on_postgres_too(env: Env) -> None:
    before = row_counts(env.store)
    with pytest.raises(InvalidInput, match="unknown strategy"):
        env.svc.catalog.apply(shop_spec(strategy="Whenever"), ACTOR)
    assert row_counts(env.store) == before
    assert env.svc.catalog.list_apps() == []


def test_release_settings_schema_refuses_unknown_fields() -> None:
    with pytest.raises(ValueError, match="stratgy"):
        ReleaseSettings.model_validate({"stratgy": "AllAtOnce"})
