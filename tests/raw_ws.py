"""A client end of a WebSocket made of raw frames, for tests that must send what a library would not."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct

from tornado.util import _websocket_mask

FRAME_TIMEOUT_S = 5.0
MASK = b"\x37\xfa\x21\x3d"
TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True, rsv: int = 0,
                 length: int | None = None, mask: bytes = MASK) -> bytes:
    """A frame as a client sends it (masked unless told otherwise); ``length`` may lie about the payload."""
    size = len(payload) if length is None else length
    first = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if masked else 0
    if size < 126:
        header = struct.pack("!BB", first, mask_bit | size)
    elif size <= 0xFFFF:
        header = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, size)
    if not masked:
        return header + payload
    return header + mask + (_websocket_mask(mask, payload) if payload else b"")


def text(value: str, **options) -> bytes:
    return client_frame(TEXT, value.encode("utf-8"), **options)


def close(code: int | None = None, reason: str = "") -> bytes:
    payload = b"" if code is None else struct.pack("!H", code) + reason.encode("utf-8")
    return client_frame(CLOSE, payload)


def handshake(path: str, host: str = "127.0.0.1", extra: bytes = b"") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode() + extra


class Peer:
    """The other end of a socket: send raw bytes, read the server's (unmasked) frames with deadlines."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.buffer = b""

    @classmethod
    async def connect(cls, port: int, data: bytes) -> "Peer":
        """Connect to a node, send ``data`` (a handshake, maybe followed by frames), read the 101."""
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        peer = cls(sock)
        await peer.send(data)
        status = await peer.read_until(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 101"), status
        return peer

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def _fill(self, timeout: float) -> bool:
        chunk = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 65536), timeout)
        self.buffer += chunk
        return bool(chunk)

    async def read_until(self, marker: bytes, timeout: float = FRAME_TIMEOUT_S) -> bytes:
        while marker not in self.buffer:
            if not await self._fill(timeout):
                raise AssertionError(f"EOF before {marker!r}: {self.buffer!r}")
        head, _, self.buffer = self.buffer.partition(marker)
        return head + marker

    async def frame(self, timeout: float = FRAME_TIMEOUT_S) -> tuple[int, bytes] | None:
        """The next frame as (opcode, payload); None at EOF. Server frames must be final and unmasked."""
        while True:
            parsed = self._parse()
            if parsed is not None:
                return parsed
            if not await self._fill(timeout):
                assert not self.buffer, f"EOF inside a frame: {self.buffer!r}"
                return None

    def _parse(self) -> tuple[int, bytes] | None:
        data = self.buffer
        if len(data) < 2:
            return None
        first, second = data[0], data[1]
        assert first & 0x80 and not first & 0x70, f"server frame not final or with RSV bits: {data[:2]!r}"
        assert not second & 0x80, "server frames must not be masked"
        size, at = second & 0x7F, 2
        if size == 126:
            if len(data) < 4:
                return None
            size, at = struct.unpack("!H", data[2:4])[0], 4
        elif size == 127:
            if len(data) < 10:
                return None
            size, at = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < at + size:
            return None
        self.buffer = data[at + size:]
        return first & 0x0F, data[at:at + size]

    async def text(self, timeout: float = FRAME_TIMEOUT_S) -> str:
        frame = await self.frame(timeout)
        assert frame is not None and frame[0] == TEXT, frame
        return frame[1].decode("utf-8")

    async def closed(self, timeout: float = FRAME_TIMEOUT_S, answer: bool = True) -> tuple[int | None, str]:
        """Skip data frames up to the server's close frame, answer it, expect EOF; its code and reason."""
        while True:
            frame = await self.frame(timeout)
            assert frame is not None, "EOF without a close frame"
            if frame[0] == CLOSE:
                break
        payload = frame[1]
        code = struct.unpack("!H", payload[:2])[0] if payload else None
        if answer:
            try:
                await self.send(close(code))
            except OSError:
                pass  # the server already cut the connection, as it may after a protocol error
        assert await self.frame(timeout) is None, "data after the close frame"
        return code, payload[2:].decode("utf-8")

    def close(self) -> None:
        self.sock.close()
