"""A loopback proxy in front of a real redis-server that a test can make misbehave toward its clients."""

from __future__ import annotations

import asyncio
import contextlib


class _Link:
    """One client's connection through the proxy."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.held = False
        self.kept = b""  # what Redis sent while held

    def close(self) -> None:
        for writer in (self.client, self.upstream):
            writer.transport.abort()


class RedisProxy:
    """Forwards each connection on :attr:`port` to Redis on ``upstream_port``.

    What the clients send always reaches Redis; what Redis sends them can be
    held back (:meth:`hold`, :meth:`release`), have bytes slipped in
    (:meth:`inject`), or be cut (:meth:`cut`). Each applies to the
    connections open at the time; later ones flow normally.
    """

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._server: asyncio.Server | None = None
        self._links: list[_Link] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.connections = 0  # accepted so far

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def url(self, path: str = "/0") -> str:
        return f"redis://127.0.0.1:{self.port}{path}"

    def hold(self) -> None:
        for link in self._links:
            link.held = True

    def release(self) -> None:
        for link in self._links:
            link.held = False
            if link.kept:
                link.client.write(link.kept)
                link.kept = b""

    def inject(self, data: bytes) -> None:
        for link in self._links:
            link.client.write(data)

    def cut(self) -> None:
        links, self._links = self._links, []
        for link in links:
            link.close()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._tasks.add(asyncio.current_task())
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, upstream_writer)
        self._links.append(link)
        try:
            await asyncio.gather(self._up(reader, link), self._down(upstream_reader, link))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            link.close()
            with contextlib.suppress(ValueError):
                self._links.remove(link)
            self._tasks.discard(asyncio.current_task())

    @staticmethod
    async def _up(reader: asyncio.StreamReader, link: _Link) -> None:
        while data := await reader.read(65536):
            link.upstream.write(data)
        link.close()

    @staticmethod
    async def _down(reader: asyncio.StreamReader, link: _Link) -> None:
        while data := await reader.read(65536):
            if link.held:
                link.kept += data
            else:
                link.client.write(data)
        link.close()
