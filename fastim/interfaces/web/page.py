"""Serves the test page and its assets, shipped inside the package, with a strict Content-Security-Policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tornado.web

STATIC_DIR = Path(__file__).resolve().with_name("static")
PAGE_FILE = "index.html"

# Scripts and styles only from this server, so neither inline code nor a
# remote script can run even if received text were ever parsed as HTML;
# ws:/wss: because the raw console may connect to any node's socket.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self' ws: wss:",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate CSP 2
}


def _secure(handler: tornado.web.RequestHandler) -> None:
    for name, value in SECURITY_HEADERS.items():
        handler.set_header(name, value)


# Marks the page while logins are open; the style sheet then shows the warning banner.
OPEN_LOGINS_BODY = b'<body data-logins="open">'


class PageHandler(tornado.web.RequestHandler):
    """``GET /test/websocket``: the page itself. Not an API handler, so the auth gate never applies."""

    def initialize(self, page: Path, logins_open: bool) -> None:
        self.page = page
        self.logins_open = logins_open

    def set_default_headers(self) -> None:
        _secure(self)
        self.set_header("Cache-Control", "no-cache")  # always fetch the page of the running version

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        html = self.page.read_bytes()
        if self.logins_open:
            html = html.replace(b"<body>", OPEN_LOGINS_BODY, 1)
        self.finish(html)


class AssetHandler(tornado.web.StaticFileHandler):
    """``GET /test/static/<file>``: the page's scripts and style sheet."""

    def set_default_headers(self) -> None:
        _secure(self)

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")  # revalidated by ETag, so an upgrade shows at once

    def get_content_type(self) -> str:
        content_type = super().get_content_type()
        return f"{content_type}; charset=utf-8" if content_type.startswith("text/") else content_type

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {self._reason}\n")


def web_routes(logins_open: bool) -> list[tuple]:
    """The page's routes; ``logins_open`` shows a warning banner on it (anyone can act as any user)."""
    return [
        (r"/test/websocket", PageHandler, {"page": STATIC_DIR / PAGE_FILE, "logins_open": logins_open}),
        (r"/test/static/(.+)", AssetHandler, {"path": str(STATIC_DIR)}),
    ]
