"""How the request target is built from the version's URL and the request."""

from __future__ import annotations

import pytest

from coalmine.gateway.upstream import Origin


@pytest.mark.parametrize(
    ("target", "rest", "query", "request_target"),
    [
        ("http://h:1/api", b"", b"", b"/api"),
        ("http://h:1/api", b"/", b"", b"/api/"),
        ("http://h:1/api", b"/orders/7", b"a=1", b"/api/orders/7?a=1"),
        ("http://h:1/api/", b"/orders", b"", b"/api/orders"),
        ("http://h:1", b"/a%2Fb", b"q=%20", b"/a%2Fb?q=%20"),
        ("http://h:1", b"", b"", b"/"),
        ("http://h:1/fn?stage=prod", b"/x", b"a=1", b"/fn/x?stage=prod&a=1"),
        ("https://h/fn?stage=prod", b"", b"", b"/fn?stage=prod"),
    ],
)
def test_the_request_target_appends_the_path_rest_and_query(
    target: str, rest: bytes, query: bytes, request_target: bytes
) -> None:
    assert Origin.parse(target).request_target(rest, query) == request_target
