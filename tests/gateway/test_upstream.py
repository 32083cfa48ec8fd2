"""How the target URL is built from the version's URL and the request."""

from __future__ import annotations

import pytest

from coalmine.gateway.upstream import target_url


@pytest.mark.parametrize(
    ("target", "rest", "query", "url"),
    [
        ("http://h:1/api", b"", b"", "http://h:1/api"),
        ("http://h:1/api", b"/", b"", "http://h:1/api/"),
        ("http://h:1/api", b"/orders/7", b"a=1", "http://h:1/api/orders/7?a=1"),
        ("http://h:1/api/", b"/orders", b"", "http://h:1/api/orders"),
        ("http://h:1", b"/a%2Fb", b"q=%20", "http://h:1/a%2Fb?q=%20"),
        ("http://h:1/fn?stage=prod", b"/x", b"a=1", "http://h:1/fn/x?stage=prod&a=1"),
        ("https://h/fn?stage=prod", b"", b"", "https://h/fn?stage=prod"),
    ],
)
def test_target_url_appends_the_path_rest_and_query(
    target: str, rest: bytes, query: bytes, url: str
) -> None:
    assert target_url(target, rest, query) == url
