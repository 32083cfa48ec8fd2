"""Every string from the wire is storable text before anything is written: a lone
surrogate, NUL or a control character is a 4xx that names the field, and what was
accepted reads back (the routing snapshot included)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coalmine.core.machine import Tick
from tests.web.conftest import Web, running

ODD = ["\ud800", "\udfff", "\x00", "\n", "\t", "\r", "\x1b", "\x7f", "\x85", "\u2028", "é", "😀"]
texts = st.text(st.one_of(st.characters(), st.sampled_from(ODD)), min_size=1, max_size=12)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    mp = pytest.MonkeyPatch()
    mp.setenv("COALMINE_BOOTSTRAP_TOKEN", "cm_test-admin-secret-0123456789abcdef")
    url = f"sqlite:///{tmp_path_factory.mktemp('text') / 'coalmine.db'}"
    try:
        with running(url) as web:
            web.apply()
            yield web
    finally:
        mp.undo()


def post(web: Web, path: str, body: Any, role: str = "deployer") -> Any:
    """JSON with \\uXXXX escapes, as any client may send a lone surrogate."""
    return web.client.post(
        path,
        content=json.dumps(body),
        headers={**web.as_(role), "Content-Type": "application/json"},
    )


def finish(web: Web, rid: str) -> None:
    """Roll the release back to the end, so the next one may start."""
    assert post(web, f"/v1/releases/{rid}/rollback", {}).is_success
    web.service.releases.advance(rid, Tick(time.time() + 1e6))


def reads_back(web: Web, rid: str) -> None:
    for path in (f"/v1/releases/{rid}", "/v1/apps/shop/releases", "/v1/apps/shop/routing"):
        r = web.client.get(path, headers=web.as_("viewer"))
        assert r.status_code == 200, (path, r.text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=texts, field=st.sampled_from(["always_canary", "never_canary"]))
def test_a_targeting_key_is_stored_and_read_back_or_refused_with_nothing_written(
    shop: Web, key: str, field: str
) -> None:
    before = shop.fingerprint()
    body = {"candidate": {"api": "v2"}, "targeting": {field: [key]}}
    r = post(shop, "/v1/apps/shop/releases", body)
    if r.status_code == 201:
        rid = r.json()["id"]
        assert r.json()["targeting"][field] == [key]
        reads_back(shop, rid)
        finish(shop, rid)
        reads_back(shop, rid)
    else:
        assert r.status_code == 422, r.text
        assert shop.fingerprint() == before
        assert any(bad in key for bad in ("\ud800", "\udfff", "\x00")) or not key.isprintable()


@pytest.mark.parametrize(
    ("path", "body", "role", "says"),
    [
        (
            "/v1/apps/shop/releases",
            {"candidate": {"api": "v2"}, "targeting": {"always_canary": ["a\ud800"]}},
            "deployer",
            "always_canary[0]: a lone surrogate (U+D800)",
        ),
        ("/v1/tokens", {"name": "ci\x00", "role": "viewer"}, "admin", "name: NUL"),
        ("/v1/tokens", {"name": "ci\ud83d", "role": "viewer"}, "admin", "name"),
        ("/v1/tokens", {"name": "ci\nx", "role": "viewer"}, "admin", "U+000A"),
        (
            "/v1/apps/shop/releases",
            {
                "candidate": {"api": "v2"},
                "hooks": {
                    "before_allow_traffic": {
                        "url": "https://hooks.example.com/",
                        "headers": {"Authorization": "Bearer \ud800"},
                    }
                },
            },
            "deployer",
            "lone surrogate",
        ),
        ("/v1/alarms", {"app": "shop", "name": "p99\ud800", "state": "ALARM"}, "deployer", "p99"),
        (
            "/v1/alarms",
            {"app": "shop", "name": "p99", "state": "ALARM", "reason": "slow \udc00"},
            "deployer",
            "lone surrogate",
        ),
    ],
)
def test_unstorable_text_is_refused_where_it_enters(
    shop: Web, path: str, body: dict[str, Any], role: str, says: str
) -> None:
    before = shop.fingerprint()
    r = post(shop, path, body, role)
    assert r.status_code in (400, 422), r.text
    assert says in r.text
    assert shop.fingerprint() == before


def test_a_reason_is_free_text_but_not_a_surrogate(shop: Web) -> None:
    rid = post(shop, "/v1/apps/shop/releases", {"candidate": {"api": "v2"}}).json()["id"]
    before = shop.fingerprint()
    r = post(shop, f"/v1/releases/{rid}/rollback", {"reason": "bad \ud800"})
    assert r.status_code == 422
    assert "reason" in r.text
    assert shop.fingerprint() == before
    r = post(shop, f"/v1/releases/{rid}/rollback", {"reason": "p99 up\nsee the dashboard"})
    assert r.is_success, r.text
    shop.service.releases.advance(rid, Tick(time.time() + 1e6))
    reads_back(shop, rid)
