"""The publish hook over HTTP: POST ``{"groupId","userId","info"}`` to the application, read its verdict.

The node speaks HTTP/1.1 to the application itself, on asyncio streams over
kept-alive connections (TLS for ``https://``): one request per connection at
a time, at most ``max_clients`` connections, an answer of at most
:data:`MAX_ANSWER_BYTES`, everything within ``[hooks] timeout``. A general
client (Tornado's curl client, which this replaced) cost the node about
250 µs of CPU per call in event-loop turns; this costs a few tens.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from urllib.parse import urlsplit

from fastim.domain.errors import HookFailed, MessageRejected

# The application answers {} or {"info": ...} or {"reject": ...}: a replacement of [im] max_message_bytes
# (4096 by default) fits many times over, even JSON-escaped; a larger body is no such answer, and is not read.
MAX_ANSWER_BYTES = 64 * 1024
# The status line and headers of an answer; an application's are a few hundred bytes.
MAX_HEAD_BYTES = 16 * 1024
USER_AGENT = "fastim-publish-hook"
# At shutdown, reviews in flight get this long to end before the connections are closed.
CLOSE_GRACE_S = 2.0
CLOSE_POLL_S = 0.02


def verdict(body: bytes, info: str) -> str:
    """The text a 200 answer's ``body`` says to store; raises MessageRejected or HookFailed.

    ``null`` counts as an absent key, so a typed application can answer
    ``{"info": null, "reject": null}`` for "accepted". A refusal wins over a replacement.
    """
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, a 4300-digit number, nesting too deep
        raise HookFailed("the answer is not JSON", cause="answer") from None
    if not isinstance(answer, dict):
        raise HookFailed(f"the answer is a JSON {type(answer).__name__}, not an object", cause="answer")
    reject = answer.get("reject")
    if reject is not None:
        if not isinstance(reject, str):
            raise HookFailed("the answer's reject is not a string", cause="answer")
        raise MessageRejected(reject)
    replacement = answer.get("info")
    if replacement is None:
        return info
    if not isinstance(replacement, str):
        raise HookFailed("the answer's info is not a string", cause="answer")
    return replacement


def _too_large() -> HookFailed:
    return HookFailed(f"the answer is over {MAX_ANSWER_BYTES} bytes", cause="answer")


class _Exchange(asyncio.Protocol):
    """One connection to the application: one request at a time, its answer parsed as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.future: asyncio.Future[tuple[int, bytes]] | None = None
        self.buffer = bytearray()
        self.status = 0
        self.length: int | None = None  # Content-Length, or None
        self.chunked = False
        self.until_close = False  # neither: the body ends with the connection
        self.in_head = True
        self.reusable = True
        self.received = False  # any byte of the answer came (a stale kept-alive connection sends none)
        self.body = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def send(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        self.future = asyncio.get_running_loop().create_future()
        self.buffer.clear()
        self.body = bytearray()
        self.in_head, self.received = True, False
        self.status, self.length, self.chunked, self.until_close = 0, None, False, False
        self.transport.write(request)
        return self.future

    def data_received(self, data: bytes) -> None:
        if self.future is None or self.future.done():
            self.reusable = False  # bytes nobody asked for: this connection is out of step
            self.transport.close()
            return
        self.received = True
        self.buffer += data
        try:
            self._parse()
        except HookFailed as failure:
            self.reusable = False
            self.transport.close()
            self.future.set_exception(failure)

    def _parse(self) -> None:
        if self.in_head:
            end = self.buffer.find(b"\r\n\r\n")
            if end > MAX_HEAD_BYTES or (end < 0 and len(self.buffer) > MAX_HEAD_BYTES):
                raise HookFailed("the answer's head is too long", cause="answer")
            if end < 0:
                return
            self._head(bytes(self.buffer[:end]).decode("latin-1"))
            del self.buffer[: end + 4]
            self.in_head = False
        if self.chunked:
            self._chunks()
        elif self.length is not None:
            if len(self.buffer) >= self.length:
                self._done(bytes(self.buffer[: self.length]))
        elif len(self.buffer) > MAX_ANSWER_BYTES:
            raise _too_large()

    def _head(self, head: str) -> None:
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HookFailed("the answer is not HTTP/1.x", cause="answer")
        self.status = int(parts[1])
        if parts[0] == "HTTP/1.0":
            self.reusable = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                if not value.isdigit():
                    raise HookFailed("the answer's Content-Length is not a number", cause="answer")
                self.length = int(value)
                if self.length > MAX_ANSWER_BYTES:
                    raise _too_large()
            elif name == "transfer-encoding":
                self.chunked = value.endswith("chunked")
            elif name == "connection":
                if "close" in value:
                    self.reusable = False
        if self.status in (204, 304) or self.status < 200:
            self.chunked, self.length = False, 0  # no body, whatever the headers say (RFC 9112 6.3)
        elif self.chunked:
            self.length = None
        elif self.length is None:
            self.until_close, self.reusable = True, False

    def _chunks(self) -> None:
        while True:
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                if len(self.buffer) > MAX_HEAD_BYTES:
                    raise HookFailed("a chunk size line is too long", cause="answer")
                return
            size_text = bytes(self.buffer[:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HookFailed("a chunk size is not a number", cause="answer") from None
            if size == 0:
                trailers_end = self.buffer.find(b"\r\n\r\n", line_end)
                if trailers_end < 0:
                    return
                self._done(bytes(self.body))
                return
            if len(self.body) + size > MAX_ANSWER_BYTES:
                raise _too_large()
            if len(self.buffer) < line_end + 2 + size + 2:
                return
            self.body += self.buffer[line_end + 2 : line_end + 2 + size]
            del self.buffer[: line_end + 2 + size + 2]

    def _done(self, body: bytes) -> None:
        self.buffer.clear()
        if not self.future.done():
            self.future.set_result((self.status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        future = self.future
        if future is None or future.done():
            return
        if self.until_close and not self.in_head:
            self._done(bytes(self.buffer))
        else:
            future.set_exception(ConnectionResetError("the application closed the connection"))


class HttpPublishHook:
    """POSTs each send to ``url`` over connections kept alive between calls, ``max_clients`` at most.

    ``timeout_s`` bounds each call whole: connecting, sending and the answer.
    A kept-alive connection the application closed meanwhile is noticed when
    the request finds it dead before any answer came: the request goes once
    more, on a new connection (a review has no effect to repeat).
    """

    def __init__(self, url: str, *, timeout_s: float, max_clients: int) -> None:
        self._url = url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL: {url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rpartition("@")[2]  # never the credentials of a URL with user:password@
        self._head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Accept: application/json\r\nUser-Agent: {USER_AGENT}\r\nContent-Length: "
        ).encode("latin-1")
        self._timeout_s = timeout_s
        self._max_clients = max_clients
        self._idle: list[_Exchange] = []
        self._busy: set[_Exchange] = set()  # connections with a request out
        self._in_flight = 0
        self._closed = False

    async def review(self, group_id: str, user_id: str, info: str) -> str:
        if self._closed:
            raise HookFailed("the node is shutting down", cause="unreachable")
        if self._in_flight >= self._max_clients:
            raise HookFailed(f"{self._max_clients} calls in flight already", cause="busy")
        body = json.dumps({"groupId": group_id, "userId": user_id, "info": info}, ensure_ascii=False).encode("utf-8")
        request = self._head + str(len(body)).encode() + b"\r\n\r\n" + body
        self._in_flight += 1
        try:
            async with asyncio.timeout(self._timeout_s):
                status, answer = await self._call(request)
        except TimeoutError:
            raise HookFailed("no answer in time", cause="timeout") from None
        finally:
            self._in_flight -= 1
        if status != 200:
            raise HookFailed(f"status {status}, not 200", cause="status")
        return verdict(answer, info)

    async def _call(self, request: bytes) -> tuple[int, bytes]:
        reused = True
        while True:
            exchange = self._take_idle()
            if exchange is None:
                exchange, reused = await self._connect(), False
            self._busy.add(exchange)
            try:
                result = await exchange.send(request)
            except ConnectionError as exc:
                if reused and not exchange.received:
                    reused = False  # a stale kept-alive connection: once more, on a new one
                    continue
                raise HookFailed(f"the connection broke: {exc}", cause="unreachable") from None
            except asyncio.CancelledError:
                exchange.transport.abort()  # a timeout mid-answer: the connection is out of step
                raise
            finally:
                self._busy.discard(exchange)
            self._give_back(exchange)
            return result

    def _take_idle(self) -> _Exchange | None:
        while self._idle:
            exchange = self._idle.pop()
            if exchange.is_open:
                return exchange
        return None

    def _give_back(self, exchange: _Exchange) -> None:
        if exchange.reusable and exchange.is_open and not self._closed and len(self._idle) < self._max_clients:
            exchange.future = None
            self._idle.append(exchange)
        elif exchange.transport is not None:
            exchange.transport.close()

    async def _connect(self) -> _Exchange:
        loop = asyncio.get_running_loop()
        try:
            _, exchange = await loop.create_connection(
                _Exchange, self._host, self._port, ssl=self._ssl,
                server_hostname=self._host if self._ssl is not None else None,
            )
        except OSError as exc:
            raise HookFailed(f"cannot connect: {exc.strerror or exc}"[:300], cause="unreachable") from None
        return exchange

    async def close(self) -> None:
        """Let reviews in flight end (CLOSE_GRACE_S at most), then close the connections."""
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(CLOSE_GRACE_S, self._timeout_s)
        while self._in_flight and loop.time() < deadline:
            await asyncio.sleep(CLOSE_POLL_S)
        idle, self._idle = self._idle, []
        for exchange in idle:
            if exchange.transport is not None:
                exchange.transport.close()
        for exchange in tuple(self._busy):  # past the grace: their calls fail now, as unreachable
            if exchange.transport is not None:
                exchange.transport.abort()
