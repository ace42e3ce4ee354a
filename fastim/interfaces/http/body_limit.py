"""``[server] max_body_bytes``: a request body over the limit is refused from its headers, never read.

Tornado reads a whole body (up to 100 MB by default) before any handler runs,
authentication included. This delegate sits between the HTTP server and the
application: a ``Content-Length`` over the limit is answered 413 at once, and a
chunked body is cut off with the same answer as soon as it passes the limit,
so a request costs the node at most ``max_body_bytes`` of memory.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable

from tornado import httputil

from fastim.interfaces.http.gate import CorsPolicy

CODE_TOO_LARGE = 413
UNCHECKED = 1 << 62  # Tornado's own body-size check, once ours has answered


class BodyLimit(httputil.HTTPServerConnectionDelegate):
    """Wraps the application (the server's delegate) with the body limit."""

    def __init__(self, application: httputil.HTTPServerConnectionDelegate, max_body_bytes: int, cors: CorsPolicy) -> None:
        self.application = application
        self.max_body_bytes = max_body_bytes
        self.cors = cors

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        inner = self.application.start_request(server_conn, request_conn)
        return _LimitedRequest(inner, request_conn, self)

    def on_close(self, server_conn: object) -> None:
        self.application.on_close(server_conn)


class _LimitedRequest(httputil.HTTPMessageDelegate):
    def __init__(self, inner: httputil.HTTPMessageDelegate, connection: httputil.HTTPConnection, limit: BodyLimit) -> None:
        self._inner = inner
        self._connection = connection
        self._limit = limit
        self._received = 0
        self._refused = False
        self._started = False  # the application has seen the headers
        self._origin: str | None = None

    def headers_received(
        self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine, headers: httputil.HTTPHeaders
    ) -> Awaitable[None] | None:
        self._origin = headers.get("Origin")
        declared = headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self._limit.max_body_bytes:
            self._refuse()
            return None
        self._started = True
        return self._inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self._refused:
            return None
        self._received += len(chunk)
        if self._received > self._limit.max_body_bytes:  # a chunked body, which declared no length
            self._refuse()
            return None
        return self._inner.data_received(chunk)

    def finish(self) -> None:
        if not self._refused:
            self._inner.finish()

    def on_connection_close(self) -> None:
        if self._started:
            self._inner.on_connection_close()

    def _refuse(self) -> None:
        """Answer 413 and let the connection close once it is sent; the rest of the body is never delivered."""
        self._refused = True
        if self._started:
            self._started = False
            self._inner.on_connection_close()  # the application drops what it buffered
        limit = self._limit.max_body_bytes
        body = json.dumps(
            {"code": CODE_TOO_LARGE, "msg": f"request body over the limit of {limit} bytes", "data": None}
        ).encode()
        headers = httputil.HTTPHeaders(
            {"Content-Type": "application/json; charset=UTF-8", "Content-Length": str(len(body)), "Connection": "close"}
        )
        for name, value in self._limit.cors.headers(self._origin).items():
            headers[name] = value
        connection = self._connection
        # Tornado would otherwise fault the body against its own ceiling and answer a second
        # time; what still arrives is dropped, and the connection closes once the 413 is out.
        connection.set_max_body_size(UNCHECKED)
        connection.write_headers(httputil.ResponseStartLine("HTTP/1.1", CODE_TOO_LARGE, "Payload Too Large"), headers, body)
        connection.finish()
