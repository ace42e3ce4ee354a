"""A publish hook for tests: a Tornado HTTP server in the test's loop that plays the application."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Awaitable, Callable, Iterator

import tornado.httpserver
import tornado.web

# What the application does with one review request: (status, body) to answer; a list body is sent in chunks.
Answer = Callable[[dict], Awaitable[tuple[int, bytes | list[bytes]]] | tuple[int, bytes | list[bytes]]]


def accept_all(request: dict) -> tuple[int, bytes]:
    return 200, b"{}"


class _Counting(tornado.httpserver.HTTPServer):
    """Counts the TCP connections it accepts: keep-alive shows as few of them."""

    def initialize(self, *args, **kwargs) -> None:
        super().initialize(*args, **kwargs)
        self.connections = 0

    def handle_stream(self, stream, address) -> None:
        self.connections += 1
        super().handle_stream(stream, address)


class _Review(tornado.web.RequestHandler):
    def initialize(self, hook: "HookServer") -> None:
        self.hook = hook

    async def post(self) -> None:
        request = json.loads(self.request.body)
        self.hook.requests.append(request)
        self.hook.content_types.append(self.request.headers.get("Content-Type", ""))
        answer = self.hook.answer(request)
        status, body = await answer if asyncio.iscoroutine(answer) else answer
        self.set_status(status)
        if isinstance(body, list):  # pieces, each flushed: chunked, with no Content-Length
            for piece in body:
                self.write(piece)
                await self.flush()
        elif body:
            self.write(body)

    def compute_etag(self) -> None:
        return None


class HookServer:
    """``HookServer(answer).start()``: listens on 127.0.0.1; ``answer`` may be changed between calls.

    :meth:`hang` is an answer that waits until :meth:`stop` (or :meth:`release`), for a
    hook that does not answer.
    """

    def __init__(self, answer: Answer = accept_all) -> None:
        self.answer = answer
        self.requests: list[dict] = []
        self.content_types: list[str] = []
        self._server: _Counting | None = None
        self._released: asyncio.Future[None] | None = None
        self._stopped = False
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/review"

    @property
    def connections(self) -> int:
        return self._server.connections

    def start(self) -> "HookServer":
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        app = tornado.web.Application([(r"/review", _Review, {"hook": self})])
        self._server = _Counting(app)
        self._server.add_sockets([sock])
        self._released = asyncio.get_running_loop().create_future()
        return self

    async def hang(self, request: dict) -> tuple[int, bytes]:
        await asyncio.shield(self._released)
        return 200, b"{}"

    def release(self) -> None:
        if self._released is not None and not self._released.done():
            self._released.set_result(None)

    async def stop(self) -> None:
        """Stop listening, answer whatever hangs, and close every connection (the port is then refused)."""
        if self._server is None or self._stopped:
            return
        self._stopped = True
        self._server.stop()
        self.release()
        await asyncio.sleep(0)
        await asyncio.wait_for(self._server.close_all_connections(), 5.0)


@contextlib.contextmanager
def serving(io_loop, server: HookServer) -> Iterator[HookServer]:
    """``server`` started in the test's loop (a fixture's ``with``), stopped when the block ends."""

    async def start() -> HookServer:
        return server.start()

    yield io_loop.run_sync(start)
    io_loop.run_sync(server.stop)
