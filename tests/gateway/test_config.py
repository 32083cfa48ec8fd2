"""GatewayConfig: validated at construction, and carried to worker processes as JSON."""

from __future__ import annotations

from typing import Any

import pytest

from coalmine.core.errors import InvalidInput
from coalmine.core.signing import Keyring
from coalmine.gateway import GatewayConfig, IdentityConfig, IdentitySource


def test_json_round_trip_keeps_everything_including_keys() -> None:
    config = GatewayConfig(
        app="shop",
        control_plane_url="http://127.0.0.1:8700",
        sdk_key="cm_sdk",
        cache_dir="/tmp/cache",
        keyring=Keyring({"k2": b"\xff" * 16 + b"new", "k1": b"old-secret-0123456789"}, "k2"),
        identity=IdentityConfig(
            user_header=None,
            user_cookie="sid",
            jwt_claim="uid",
            jwt_secret="s" * 32,
            order=(IdentitySource.JWT, IdentitySource.COOKIE),
        ),
        timeout=2.5,
        connect_timeout=0.5,
        pool_size=7,
        local_workers=3,
        max_local_body=1000,
        context_ttl=60,
    )
    assert GatewayConfig.from_json(config.to_json()) == config
    plain = GatewayConfig(app="shop")
    worker = GatewayConfig.from_json(plain.to_json())
    assert worker == plain
    # without a keyring, the key made at start signs anonymous ids in every worker alike
    assert plain.anonymous_keyring is not None
    assert worker.anonymous_keyring == plain.anonymous_keyring
    assert GatewayConfig(app="shop").anonymous_keyring != plain.anonymous_keyring
    assert config.anonymous_keyring == config.keyring


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"app": "Shop"}, "invalid app name"),
        ({"control_plane_url": "localhost:8700"}, "control plane URL"),
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"connect_timeout": -1}, "connect timeout"),
        ({"pool_size": 0}, "pool size"),
        ({"local_workers": 1.5}, "local workers"),
        ({"max_local_body": True}, "max local body"),
    ],
)
def test_bad_settings_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        GatewayConfig(**{"app": "shop", **kwargs})


def test_the_public_names_are_sorted_and_resolve() -> None:
    import coalmine.gateway
    from tests.core.test_public_api import _check

    _check(coalmine.gateway)
    for name in ("app", "asgi", "config", "identity", "runtime", "source", "upstream"):
        module = getattr(coalmine.gateway, name)
        assert module.__doc__, f"coalmine.gateway.{name} has no docstring"
        _check(module)
