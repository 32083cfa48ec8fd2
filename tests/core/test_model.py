"""The domain model: names, targets, versions, releases, targeting, decisions."""

from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalmine.core import (
    App,
    Channel,
    Decision,
    Function,
    InvalidInput,
    Phase,
    Reason,
    Release,
    RouteMode,
    Target,
    Targeting,
    TargetKind,
    Version,
    parse_strategy,
)
from coalmine.core.model import (
    ACTIVE_PHASES,
    ROLLED_BACK_PHASES,
    TARGET_PATTERN,
    freeze_versions,
    validate_exposure,
    validate_name,
    validate_version_name,
)

STRATEGY = parse_strategy("Canary10Percent5Minutes")
CURRENT = {"cart": "v1", "checkout": "v1", "notify": "v1"}


# --- targets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "kind"),
    [
        ("handlers:place_order", TargetKind.LOCAL),
        ("food.handlers.orders:place_order", TargetKind.LOCAL),
        ("pkg.mod:Handler.handle", TargetKind.LOCAL),
        ("_private:_fn", TargetKind.LOCAL),
        ("http://localhost:8080/invoke", TargetKind.HTTP),
        ("https://fn.example.com", TargetKind.HTTP),
        ("https://10.0.0.1:9000/a/b?x=1", TargetKind.HTTP),
        ("arn:aws:lambda:us-east-1:123456789012:function:place-order:3", TargetKind.LAMBDA),
        ("arn:aws:lambda:eu-west-2:123456789012:function:my_fn:live", TargetKind.LAMBDA),
        ("arn:aws:lambda:us-east-1:123456789012:function:f:$LATEST", TargetKind.LAMBDA),
        ("arn:aws-cn:lambda:cn-north-1:123456789012:function:f:1", TargetKind.LAMBDA),
        ("arn:aws-us-gov:lambda:us-gov-west-1:123456789012:function:f:prod", TargetKind.LAMBDA),
        ("lambda:place-order:3", TargetKind.LAMBDA),
        ("lambda:notify_user:live", TargetKind.LAMBDA),
        ("lambda:f:$LATEST", TargetKind.LAMBDA),
    ],
)
def test_target_parse(ref: str, kind: TargetKind) -> None:
    target = Target.parse(ref)
    assert target == Target(kind, ref)
    assert str(target) == ref


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("", "non-empty string"),
        (None, "non-empty string"),
        (42, "non-empty string"),
        ("http://", "invalid HTTP target"),
        ("https:///path", "invalid HTTP target"),
        ("http://host/pa th", "invalid HTTP target"),
        ("http://host/\tx", "invalid HTTP target"),
        ("arn:aws:lambda:us-east-1:123456789012:function:place-order", "qualified function ARN"),
        ("arn:aws:lambda:us-east-1:12345:function:f:1", "invalid Lambda target"),
        ("arn:aws:s3:::bucket", "invalid Lambda target"),
        ("arn:aws:lambda:us-east-1:123456789012:function:f:1:extra", "invalid Lambda target"),
        ("lambda:place-order", "a qualifier is required"),
        ("lambda:notify", "lambda:NAME:VERSION_OR_ALIAS"),
        ("lambda:f:1:extra", "invalid Lambda target"),
        ("lambda::1", "invalid Lambda target"),
        ("module", "local handler 'package.module:function'"),
        ("pkg.mod:", "invalid target"),
        (":handler", "invalid target"),
        ("pkg-name.mod:fn", "invalid target"),
        ("1pkg:fn", "invalid target"),
        ("ftp://host/x", "an http\\(s\\):// URL, a Lambda qualified ARN"),
    ],
)
def test_target_parse_errors(ref: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Target.parse(ref)  # type: ignore[arg-type]


# --- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "0", "place-order", "notify_user", "a1-b2_c3", "a" * 63])
def test_valid_names(name: str) -> None:
    assert validate_name(name, "function") == name


@pytest.mark.parametrize(
    "name", ["", "A", "Place-order", "-a", "a-", "_a", "a_", "a.b", "a b", "a" * 64, "é", None, 1]
)
def test_invalid_names(name: object) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_name(name, "app")
    message = str(info.value)
    assert message.startswith(f"invalid app name {name!r}")
    assert "1-63 lowercase letters, digits, '-' or '_'" in message
    assert "starting and ending with a letter or digit" in message


@pytest.mark.parametrize("name", ["1", "v1", "v1.2.3", "2024-06-01_rc.1", "A" * 64, "LATEST"])
def test_valid_version_names(name: str) -> None:
    assert validate_version_name(name) == name


@pytest.mark.parametrize("name", ["", ".v1", "-v1", "_v1", "v 1", "v1/2", "a" * 65, "v:1", None, 3])
def test_invalid_version_names(name: object) -> None:
    with pytest.raises(
        InvalidInput, match=r"invalid version name .*1-64 characters from A-Z a-z 0-9 \. _ -"
    ):
        validate_version_name(name)


@pytest.mark.parametrize("value", [0, 1, 9999, 10000])
def test_valid_exposures(value: int) -> None:
    assert validate_exposure(value) == value


@pytest.mark.parametrize("value", [-1, 10001, True, False, 1.0, "100", None])
def test_invalid_exposures(value: object) -> None:
    with pytest.raises(InvalidInput, match="basis points, a whole number from 0 to 10000"):
        validate_exposure(value)


def test_version_function_app_validate_names() -> None:
    target = Target.parse("pkg.mod:fn")
    assert Version("cart", "v1", target).target is target
    with pytest.raises(InvalidInput, match="invalid function name"):
        Version("Cart", "v1", target)
    with pytest.raises(InvalidInput, match="invalid version name"):
        Version("cart", "v 1", target)
    assert Function("shop", "cart") == Function("shop", "cart")
    with pytest.raises(InvalidInput, match="invalid app name"):
        Function("Shop", "cart")
    with pytest.raises(InvalidInput, match="invalid function name"):
        Function("shop", "cart!")
    assert App("shop", ("cart", "pay")).functions == ("cart", "pay")
    with pytest.raises(InvalidInput, match="invalid function name"):
        App("shop", ("cart", "Pay"))
    with pytest.raises(InvalidInput, match="invalid app name"):
        App("")


def test_freeze_versions() -> None:
    frozen = freeze_versions({"b": "2", "a": "1"})
    assert list(frozen.items()) == [("a", "1"), ("b", "2")]
    with pytest.raises(TypeError):
        frozen["c"] = "3"  # type: ignore[index]
    with pytest.raises(InvalidInput, match="baseline must be a mapping"):
        freeze_versions([("a", "1")], "baseline")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="invalid function name"):
        freeze_versions({"A": "1"})
    with pytest.raises(InvalidInput, match="invalid version name"):
        freeze_versions({"a": ""})


# --- releases ----------------------------------------------------------------------------------


def start(**kwargs: object) -> Release:
    args: dict[str, object] = {
        "id": "r1",
        "app": "shop",
        "current": CURRENT,
        "changes": {"cart": "v2"},
        "salt": "salt-1",
        "strategy": STRATEGY,
    }
    return Release.start(**{**args, **kwargs})  # type: ignore[arg-type]


def test_release_start_merges_changes() -> None:
    rel = start(changes={"cart": "v2", "notify": "v9"})
    assert dict(rel.baseline) == CURRENT
    assert dict(rel.candidate) == {"cart": "v2", "checkout": "v1", "notify": "v9"}
    assert rel.changed_functions == ("cart", "notify")
    assert rel.versions(Channel.CANARY) is rel.candidate
    assert rel.versions(Channel.STABLE) is rel.baseline
    assert rel.phase is Phase.PENDING
    assert rel.exposure == 0
    assert rel.route_mode is RouteMode.USER
    assert rel.targeting == Targeting()
    assert rel.strategy is STRATEGY


def test_release_start_does_not_share_the_callers_maps() -> None:
    current = dict(CURRENT)
    rel = start(current=current)
    current["cart"] = "v7"
    assert rel.baseline["cart"] == "v1"
    with pytest.raises(TypeError):
        rel.candidate["cart"] = "v3"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        rel.exposure = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"changes": {"payments": "v2"}}, "the app has no function named payments"),
        ({"changes": {"zeta": "v2", "alpha": "v2"}}, "no function named alpha, zeta"),
        ({"current": {}, "changes": {}}, "at least one function"),
        ({"changes": {}}, "nothing to release"),
        ({"changes": {"cart": "v1"}}, "the candidate versions are the baseline versions"),
        ({"changes": {"cart": "bad version"}}, "invalid version name"),
        ({"id": "r 1"}, "invalid release id 'r 1'"),
        ({"id": ""}, "invalid release id"),
        ({"app": "Shop"}, "invalid app name"),
        ({"salt": "a:b"}, "invalid salt"),
    ],
)
def test_release_start_rejects(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        start(**kwargs)


def test_release_rejects_mismatched_function_sets() -> None:
    with pytest.raises(InvalidInput, match="same functions; differing: checkout, pay"):
        Release(
            id="r1",
            app="shop",
            baseline={"cart": "v1", "checkout": "v1"},
            candidate={"cart": "v2", "pay": "v1"},
            salt="s",
            strategy=STRATEGY,
        )


def test_release_coerces_and_validates_fields() -> None:
    rel = dataclasses.replace(start(), phase="running", route_mode="request", exposure=10000)  # type: ignore[arg-type]
    assert rel.phase is Phase.RUNNING
    assert rel.route_mode is RouteMode.REQUEST
    with pytest.raises(InvalidInput, match="invalid exposure 10001"):
        dataclasses.replace(start(), exposure=10001)
    with pytest.raises(ValueError, match="'finished' is not a valid Phase"):
        dataclasses.replace(start(), phase="finished")  # type: ignore[arg-type]


def test_phase_sets() -> None:
    assert {Phase.PENDING, Phase.RUNNING, Phase.PAUSED, Phase.PROMOTING} == ACTIVE_PHASES
    assert {Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.FAILED} == ROLLED_BACK_PHASES
    assert set(Phase) == ACTIVE_PHASES | ROLLED_BACK_PHASES | {Phase.PROMOTED}


def test_wire_strings_of_enums() -> None:
    assert [str(c) for c in Channel] == ["stable", "canary"]
    assert [str(m) for m in RouteMode] == ["user", "request"]
    assert {str(r) for r in Reason} == {
        "cohort",
        "targeted",
        "override",
        "pinned",
        "rolled_back",
        "promoted",
        "no_release",
        "error",
    }
    assert [str(k) for k in TargetKind] == ["local", "http", "lambda"]


# --- targeting ---------------------------------------------------------------------------------


def test_targeting() -> None:
    t = Targeting(always_canary=frozenset({"tester"}), never_canary=frozenset({"ceo"}))
    assert t.channel_for("tester") is Channel.CANARY
    assert t.channel_for("ceo") is Channel.STABLE
    assert t.channel_for("someone") is None
    assert Targeting().channel_for("tester") is None


def test_targeting_conflicts_name_the_users() -> None:
    with pytest.raises(InvalidInput, match="both always-canary and never-canary: alice, bob"):
        Targeting(frozenset({"alice", "bob", "carol"}), frozenset({"bob", "alice", "dave"}))


def test_targeting_conflict_message_lists_at_most_five() -> None:
    users = frozenset(f"u{i}" for i in range(9))
    with pytest.raises(InvalidInput) as info:
        Targeting(users, users)
    assert str(info.value).endswith("u0, u1, u2, u3, u4")


@pytest.mark.parametrize("bad", ["", 5, None])
def test_targeting_rejects_empty_or_non_string_keys(bad: object) -> None:
    with pytest.raises(InvalidInput, match="non-empty strings"):
        Targeting(always_canary=frozenset({"ok", bad}))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="non-empty strings"):
        Targeting(never_canary=frozenset({bad}))  # type: ignore[arg-type]


# --- decisions ---------------------------------------------------------------------------------


def test_decision_accessors_and_to_dict() -> None:
    d = Decision("shop", "r1", Channel.CANARY, freeze_versions({"cart": "v2"}), Reason.COHORT)
    assert d.is_canary
    assert d.version_of("cart") == "v2"
    assert d.version_of("nope") is None
    assert d.to_dict() == {
        "app": "shop",
        "release_id": "r1",
        "channel": "canary",
        "versions": {"cart": "v2"},
        "reason": "cohort",
    }
    e = Decision("shop", None, Channel.STABLE, {}, Reason.ERROR, "no user key")
    assert not e.is_canary
    assert e.to_dict() == {
        "app": "shop",
        "release_id": None,
        "channel": "stable",
        "versions": {},
        "reason": "error",
        "detail": "no user key",
    }
    assert type(d.to_dict()["versions"]) is dict


_TARGET_PARTS = st.sampled_from(
    [
        "http://",
        "https://",
        "arn:aws:lambda:eu-west-1:123456789012:function:",
        "lambda:",
        "/",
        ":",
        ".",
    ]
)


@given(st.lists(st.one_of(_TARGET_PARTS, st.text(max_size=12)), max_size=5).map("".join))
def test_the_published_target_pattern_accepts_what_parse_accepts(ref: str) -> None:
    """The API schema's pattern for a target and `Target.parse` agree on every string."""
    try:
        Target.parse(ref)
        accepted = True
    except InvalidInput:
        accepted = False
    # JSON Schema's `$` is the end of the text; Python's also matches before a final newline
    ecma = TARGET_PATTERN.removesuffix("$") + r"\Z"
    assert (re.search(ecma, ref) is not None) == accepted
