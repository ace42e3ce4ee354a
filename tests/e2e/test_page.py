"""The test page over plain HTTP: served openly, self-contained, locked down by its headers, text-only scripts."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest

from fastim.app import make_app
from fastim.container import build_container, close_container
from fastim.interfaces.web.page import STATIC_DIR
from tests.settings_factory import make_settings

PAGE = "/test/websocket"
# APIs that parse a string as HTML or code: received data must never reach them.
HTML_SINKS = re.compile(r"\b(innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval|Function|setHTMLUnsafe)\b\s*[=(]")
JS_IMPORT = re.compile(r"""^import\s.*?from\s+["'](\./[^"']+)["'];?$""", re.MULTILINE)


@pytest.fixture
def app(io_loop):
    # login_auth on, to show that the page and its assets need no login.
    container = build_container(make_settings(storage__backend="memory", im__login_auth=1))
    yield make_app(container)
    io_loop.run_sync(lambda: close_container(container))


class Markup(HTMLParser):
    """What a page's markup loads and whether it carries anything inline."""

    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.inline.append(f"<{tag} {name}=...>")
            if name in ("src", "href") and value and not value.startswith("data:"):
                self.references.append(value)
        if tag == "style":
            self.inline.append("<style>")
        self._in_script = tag == "script"
        if tag == "script" and "src" not in attributes:
            self.inline.append("<script> without src")

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.inline.append("script text")


async def fetch(http_client, base_url, path, **kwargs):
    return await http_client.fetch(base_url + path, raise_error=False, **kwargs)


@pytest.mark.gen_test
async def test_page_is_served_without_login_and_locked_down(http_client, base_url):
    response = await fetch(http_client, base_url, PAGE)
    assert response.code == 200
    assert response.headers["Content-Type"] == "text/html; charset=UTF-8"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    policy = dict(
        (part.split()[0], part.split()[1:]) for part in response.headers["Content-Security-Policy"].split("; ")
    )
    assert policy["script-src"] == ["'self'"]  # no inline scripts or handlers, no remote scripts
    assert policy["style-src"] == ["'self'"]
    assert policy["default-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["connect-src"] == ["'self'", "ws:", "wss:"]


@pytest.mark.gen_test
async def test_page_and_every_asset_it_loads_come_from_this_server(http_client, base_url):
    markup = Markup()
    markup.feed((await fetch(http_client, base_url, PAGE)).body.decode())
    assert markup.inline == []
    assert markup.references, "the page loads its scripts and styles from files"
    queue = [urljoin(base_url + PAGE, ref) for ref in markup.references]
    seen = set()
    while queue:
        url = queue.pop()
        if url in seen:
            continue
        seen.add(url)
        assert urlsplit(url).netloc == urlsplit(base_url).netloc, f"{url} is not on this server"
        response = await http_client.fetch(url, raise_error=False)
        assert response.code == 200, url
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        if url.endswith(".js"):
            assert response.headers["Content-Type"].startswith("text/javascript"), url
            source = response.body.decode()
            assert not HTML_SINKS.search(source), f"{url} hands text to an HTML or code parser"
            assert "http://" not in source and "https://" not in source, f"{url} names a remote address"
            queue.extend(urljoin(url, path) for path in JS_IMPORT.findall(source))
        elif url.endswith(".css"):
            assert response.headers["Content-Type"].startswith("text/css"), url
            assert "url(" not in response.body.decode() and "@import" not in response.body.decode()
    served = {urlsplit(url).path.rsplit("/", 1)[-1] for url in seen}
    shipped = {path.name for path in STATIC_DIR.iterdir() if path.suffix in (".js", ".css")}
    assert served == shipped, "every shipped asset is used, and every used asset is shipped"


@pytest.mark.gen_test
@pytest.mark.parametrize("path", ["/test/static/%2e%2e/page.py", "/test/static/..%2fpage.py", "/test/static/nope.js"])
async def test_nothing_outside_the_static_folder_is_served(http_client, base_url, path):
    response = await fetch(http_client, base_url, path)
    assert response.code in (403, 404)
    assert b"import" not in response.body
