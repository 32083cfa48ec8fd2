"""Every page the control plane serves loads its scripts, styles and icons from itself.

Each GET route that answers HTML (the dashboard, its fragments, Swagger UI at
/docs, ReDoc at /redoc) is read with a viewer token, and with public docs
without one; every script, stylesheet, icon and image it names, and every
``url()`` and ``@import`` in the stylesheets those name, must be on the
control plane's own origin (a path, or http://127.0.0.1) and must be served.
Inline scripts name no other origin either (Swagger UI's validator badge is off).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from coalmine.web import create_app
from tests.web.conftest import ADMIN_SECRET, TestClient, Web

_LOADS = {"script": ("src",), "link": ("href",), "img": ("src",), "iframe": ("src",)}
_ORIGIN = "http://testserver"
_URL = re.compile(r"""https?://[^\s'"`)<>]+""")
_CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]+)|@import\s+['"]([^'"]+)""")


class _Loads(HTMLParser):
    """The URLs a page loads (scripts, stylesheets, icons, images) and its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in _LOADS.get(tag, ()) and value:
                self.urls.append(value)
            if name == "style" and value:
                self.inline.append(value)
        self._in_script = tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.inline.append(data)


def _own(url: str) -> bool:
    if url.startswith("data:"):
        return True
    parts = urlsplit(urljoin(_ORIGIN + "/", url))
    return f"{parts.scheme}://{parts.netloc}" == _ORIGIN or parts.hostname == "127.0.0.1"


def _get_paths(routes: list[BaseRoute]) -> Iterator[str]:
    """The path of every GET route, into included routers (FastAPI 0.16x keeps those as
    `original_router`; the app includes every router without a prefix of its own)."""
    for route in routes:
        if isinstance(route, APIRoute):
            if "GET" in route.methods:
                yield route.path
        elif (inner := getattr(route, "original_router", None)) is not None:
            yield from _get_paths(inner.routes)


def _html_pages(client: TestClient, headers: dict[str, str], release: str) -> Iterator[str]:
    """The path of every GET route that answers HTML (path parameters filled in)."""
    for template in _get_paths(client.app.routes):  # type: ignore[attr-defined]
        path = template.replace("{release_id}", release)
        if "{" in path:
            continue
        r = client.get(path, headers=headers)
        if r.status_code == 200 and r.headers["content-type"].startswith("text/html"):
            yield path


def _check_page(client: TestClient, path: str, headers: dict[str, str]) -> list[str]:
    page = client.get(path, headers=headers)
    parser = _Loads()
    parser.feed(page.text)
    for code in parser.inline:
        foreign = [u for u in _URL.findall(code) if not _own(u)]
        assert not foreign, f"{path}: an inline script or style names {foreign}"
    for url in parser.urls:
        assert _own(url), f"{path} loads {url} from another origin"
        asset = client.get(urljoin(_ORIGIN + path, url), headers=headers)
        assert asset.status_code == 200, f"{path}: {url} answers {asset.status_code}"
        assert asset.content, url
        if asset.headers["content-type"].startswith("text/css"):
            for found in _CSS_URL.findall(asset.text):
                ref = found[0] or found[1]
                assert _own(ref), f"{url} (of {path}) loads {ref} from another origin"
    return parser.urls


def test_no_page_loads_anything_from_another_origin(sqlite_web: Web) -> None:
    rid = sqlite_web.start_release()
    view = sqlite_web.as_("viewer")
    pages = sorted(_html_pages(sqlite_web.client, view, rid))
    assert pages == [
        "/docs",
        "/redoc",
        "/ui",
        "/ui/fragments/apps",
        f"/ui/fragments/releases/{rid}",
    ]
    loaded = {p: _check_page(sqlite_web.client, p, view) for p in pages}
    assert "/docs/assets/swagger-ui-bundle.js" in loaded["/docs"]
    assert "/docs/assets/swagger-ui.css" in loaded["/docs"]
    assert "/docs/assets/redoc.standalone.js" in loaded["/redoc"]
    assert "/ui/ui.js" in loaded["/ui"]


def test_public_docs_load_from_the_control_plane_too(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COALMINE_BOOTSTRAP_TOKEN", ADMIN_SECRET)
    with TestClient(create_app(database_url=sqlite_url, public_docs=True)) as c:
        for path in ("/docs", "/redoc"):
            assert c.get(path).status_code == 200
            assert _check_page(c, path, {})
        assert c.get("/openapi.json").status_code == 200


def test_the_docs_assets_are_public_and_only_those_files(sqlite_web: Web) -> None:
    c = sqlite_web.client
    js = c.get("/docs/assets/swagger-ui-bundle.js")
    assert js.status_code == 200
    assert js.headers["content-type"].startswith("text/javascript")
    assert "SwaggerUIBundle" in js.text
    assert c.get("/docs/assets/swagger-ui.css").headers["content-type"].startswith("text/css")
    for name in ("core.py", "..%2F__init__.py", "nope.js"):
        r = c.get(f"/docs/assets/{name}")
        assert r.status_code == 404, name
    assert c.get("/docs").status_code == 401  # the page itself still needs a token
