"""A small WebSocket client for tests: connect, read JSON frames with deadlines, expect silence."""

from __future__ import annotations

import asyncio
import json

from tornado.websocket import websocket_connect

FRAME_TIMEOUT_S = 5.0


class Client:
    def __init__(self, connection) -> None:
        self.connection = connection

    @classmethod
    async def connect(cls, base_url: str, path: str, **kwargs) -> "Client":
        url = base_url.replace("http://", "ws://", 1) + path
        return cls(await asyncio.wait_for(websocket_connect(url, **kwargs), FRAME_TIMEOUT_S))

    async def text(self, timeout: float = FRAME_TIMEOUT_S) -> str | None:
        """The next frame's text; None once the server closed the socket."""
        return await asyncio.wait_for(self.connection.read_message(), timeout)

    async def json(self, timeout: float = FRAME_TIMEOUT_S):
        text = await self.text(timeout)
        assert text is not None, f"socket closed: {self.close_code} {self.close_reason}"
        return json.loads(text)

    async def silent_for(self, seconds: float) -> bool:
        try:
            frame = await asyncio.wait_for(self.connection.read_message(), seconds)
        except asyncio.TimeoutError:
            return True
        raise AssertionError(f"expected silence, got {frame!r}")

    async def send(self, text: str | bytes) -> None:
        await self.connection.write_message(text, binary=isinstance(text, bytes))

    async def closed(self, timeout: float = FRAME_TIMEOUT_S) -> tuple[int | None, str | None]:
        """Read until the server closes; the close code and reason."""
        deadline = asyncio.get_running_loop().time() + timeout
        while await asyncio.wait_for(self.connection.read_message(), max(0.01, deadline - asyncio.get_running_loop().time())) is not None:
            pass
        return self.close_code, self.close_reason

    @property
    def close_code(self):
        return self.connection.close_code

    @property
    def close_reason(self):
        return self.connection.close_reason

    def close(self) -> None:
        self.connection.close()
