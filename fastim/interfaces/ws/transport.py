"""One WebSocket past its handshake: RFC 6455 frames straight on the socket, on the event loop's selector.

Tornado answers the handshake (see ``upgrade.py``); from then on a socket costs
this object, the socket and one reader registration, instead of Tornado's
stream, protocol, handler and their nine suspended coroutines per connection.
A delivery is one ``send`` call when nothing is queued.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Awaitable
from typing import Protocol

from tornado.util import _websocket_mask as unmask  # Tornado's C speedup when built, else pure Python

from fastim.interfaces.ws.frames import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_INVALID_DATA,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    close_frame,
    control_frame,
)

logger = logging.getLogger(__name__)

OPEN, CLOSING, CLOSED = 0, 1, 2
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
FIN, RSV, OPCODE, MASKED, LENGTH = 0x80, 0x70, 0x0F, 0x80, 0x7F
# One recv takes whatever the kernel holds, up to this; a chat frame is a few KB.
READ_CHUNK = 65536
# While a message is being handled, at most this much more is read ahead; past it the
# socket is left unread, so a client that floods waits in its own kernel buffer.
READ_AHEAD_BYTES = 65536
# Tornado's wait for the peer's answer to our close frame, before the socket is cut.
CLOSE_TIMEOUT_S = 5.0
# RFC 6455 §7.4: the codes a peer may put in its close frame.
_VALID_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))


class Listener(Protocol):
    """What a transport tells the socket it carries."""

    def on_text(self, text: str) -> Awaitable[None] | None:
        """A complete text message; return an awaitable to hold the next message until it is done."""

    def on_binary(self, data: bytes) -> None: ...

    def on_backlog_full(self) -> None:
        """The peer stopped reading and the unsent bytes passed the bound; the write was not queued."""

    def on_closed(self) -> None:
        """The connection is gone, cleanly or not; called exactly once."""


class Transport:
    """A server-side WebSocket on a non-blocking socket.

    Writes go to the kernel at once when nothing is queued; what the kernel
    does not take waits in one buffer, bounded by ``max_unsent`` bytes.
    Reads parse frames as they arrive: masked client frames, fragmentation,
    ping/pong and the close handshake; violations close with the RFC's codes
    (1002 protocol, 1007 bad UTF-8, 1009 too big). One message is handled at
    a time, in order.
    """

    __slots__ = (
        "_sock", "_fd", "_loop", "_send", "listener", "max_unsent", "_max_message",
        "state", "_unsent", "_inbox", "_fragments", "_fragments_opcode", "_busy", "_reading",
        "_draining", "_timer", "close_code",
    )

    def __init__(self, sock: socket.socket, *, max_unsent: int, max_message: int, unread: bytes = b"") -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = asyncio.get_running_loop()
        self._send = sock.send
        self.listener: Listener | None = None
        self.max_unsent = max_unsent
        self._max_message = max_message
        self.state = OPEN
        self._unsent: bytearray | None = None  # what the kernel has not taken yet, oldest first
        self._inbox = unread  # received bytes not parsed yet (an incomplete frame)
        self._fragments: list[bytes] | None = None  # a fragmented message being received
        self._fragments_opcode = 0
        self._busy = False  # a message is being handled: the next ones wait
        self._reading = False
        self._draining = False  # the connection is ending: input is read and dropped until EOF
        self._timer: asyncio.TimerHandle | None = None
        self.close_code: int | None = None  # what the peer's close frame said

    def start(self, listener: Listener) -> None:
        """Hand frames to ``listener`` from now on."""
        self.listener = listener
        self._resume_reading()
        if self._inbox:
            self._loop.call_soon(self._parse)  # frames that came with the handshake

    # -- writing -----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue complete frames (pre-built, unmasked); dropped once a close frame is queued."""
        if self.state:
            return  # RFC 6455 §5.5.1: nothing follows a close frame
        unsent = self._unsent
        if unsent is None:
            try:
                sent = self._send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._lost()
                return
            if sent == len(data):
                return
            self._unsent = bytearray(memoryview(data)[sent:])
            self._loop.add_writer(self._fd, self._on_writable)
        elif len(unsent) + len(data) > self.max_unsent:
            self.listener.on_backlog_full()
        else:
            unsent += data

    def _queue(self, data: bytes) -> None:
        """Queue past the bound: control frames must go out whatever the backlog."""
        if self._unsent is None:
            self._unsent = bytearray()
            self._loop.add_writer(self._fd, self._on_writable)
        self._unsent += data
        self._on_writable()

    def _on_writable(self) -> None:
        unsent = self._unsent
        if unsent is None:
            return
        try:
            sent = self._send(unsent)
        except BlockingIOError:
            return
        except OSError:
            self._lost()
            return
        del unsent[:sent]
        if not unsent:
            self._loop.remove_writer(self._fd)
            self._unsent = None
            if self._draining:
                self._shut_write()

    @property
    def unsent_bytes(self) -> int:
        return len(self._unsent) if self._unsent is not None else 0

    # -- closing -----------------------------------------------------------------------

    def close(self, code: int | None = None, reason: str = "") -> None:
        """Start the close handshake; the socket is cut when the peer answers, or after CLOSE_TIMEOUT_S."""
        if self.state != OPEN:
            return
        self.state = CLOSING
        self._queue(close_frame(code, reason))
        self._arm_timer()

    def _answer_close(self, code: int | None) -> None:
        """The peer started the close handshake: echo its code, then end the connection."""
        self.close_code = code
        self.state = CLOSING
        self._queue(close_frame(code, ""))
        self._finish()

    def _fail(self, code: int, reason: str) -> None:
        """A protocol violation (RFC 6455 §7.1.7): say why, then end the connection."""
        if self.state == OPEN:
            self.state = CLOSING
            self._queue(close_frame(code, reason))
        self._finish()

    def _finish(self) -> None:
        """Read nothing more; once our close frame is out send FIN, and cut the socket at the peer's EOF.

        Draining the input until the peer closes, instead of closing at once,
        keeps the kernel from answering unread data with a reset that could
        destroy our close frame before the peer read it.
        """
        self._draining = True
        self._inbox = b""
        self._fragments = None
        if self._unsent is None:
            self._shut_write()
        self._arm_timer()

    def _shut_write(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._lost()

    def _arm_timer(self) -> None:
        if self._timer is None and self.state != CLOSED:
            self._timer = self._loop.call_later(CLOSE_TIMEOUT_S, self._release)

    def _lost(self) -> None:
        """The peer reset the connection mid-write; wind down outside the caller's loop."""
        if self.state != CLOSED:
            self.state = CLOSING
            self._loop.call_soon(self._release)

    def _release(self) -> None:
        """Cut the socket and tell the listener, once."""
        if self.state == CLOSED:
            return
        self.state = CLOSED
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pause_reading()
        if self._unsent is not None:
            self._loop.remove_writer(self._fd)
            self._unsent = None
        self._inbox = b""
        self._fragments = None
        self._sock.close()
        listener, self.listener = self.listener, None
        if listener is not None:
            try:
                listener.on_closed()
            except Exception:
                logger.exception("a socket's close handler failed")

    # -- reading -----------------------------------------------------------------------

    def _resume_reading(self) -> None:
        if not self._reading and self.state != CLOSED:
            self._reading = True
            self._loop.add_reader(self._fd, self._on_readable)

    def _pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def _on_readable(self) -> None:
        try:
            data = self._sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the peer is gone (after our close frame, or without one: 1006 on its side)
            self._release()
            return
        if self._draining:
            return
        self._inbox = self._inbox + data if self._inbox else data
        if not self._busy:
            self._parse()
        elif len(self._inbox) > READ_AHEAD_BYTES:
            self._pause_reading()

    def _parse(self) -> None:
        """Take every complete frame out of the inbox, until one message needs waiting for."""
        inbox = self._inbox
        size = len(inbox)
        at = 0
        while not self._busy and not self._draining and self.state != CLOSED:
            if size - at < 2:
                break
            first, second = inbox[at], inbox[at + 1]
            opcode, length, head = first & OPCODE, second & LENGTH, at + 2
            if first & RSV:
                return self._fail(CLOSE_PROTOCOL_ERROR, "reserved bits set; no extension was agreed")
            if not second & MASKED:
                return self._fail(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
            if length == 126:
                if size - at < 4:
                    break
                length, head = int.from_bytes(inbox[at + 2:at + 4]), at + 4
            elif length == 127:
                if size - at < 10:
                    break
                length, head = int.from_bytes(inbox[at + 2:at + 10]), at + 10
            if opcode & 0x8:
                if length > 125 or not first & FIN:
                    return self._fail(CLOSE_PROTOCOL_ERROR, "control frames are short and unfragmented")
            elif length + (sum(map(len, self._fragments)) if self._fragments else 0) > self._max_message:
                return self._fail(CLOSE_TOO_BIG, f"message over {self._max_message} bytes")
            end = head + 4 + length
            if size < end:
                break
            payload = unmask(inbox[head:head + 4], inbox[head + 4:end]) if length else b""
            at = end
            self._frame(first & FIN, opcode, payload)
        if not self._draining and self.state != CLOSED:
            self._inbox = inbox[at:] if at < size else b""

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode == OP_CLOSE:
            return self._on_close_frame(payload)
        if opcode == OP_PING:
            if self.state == OPEN:
                self._queue(control_frame(OP_PONG, payload))  # RFC 6455 §5.5.2
            return
        if opcode == OP_PONG:
            return
        if opcode == OP_CONTINUATION:
            if self._fragments is None:
                return self._fail(CLOSE_PROTOCOL_ERROR, "continuation frame without a message")
            self._fragments.append(payload)
            if fin:
                payload, opcode = b"".join(self._fragments), self._fragments_opcode
                self._fragments = None
                self._message(opcode, payload)
            return
        if opcode not in (OP_TEXT, OP_BINARY):
            return self._fail(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
        if self._fragments is not None:
            return self._fail(CLOSE_PROTOCOL_ERROR, "a new message before the fragmented one ended")
        if fin:
            self._message(opcode, payload)
        else:
            self._fragments, self._fragments_opcode = [payload], opcode

    def _on_close_frame(self, payload: bytes) -> None:
        if self.state == CLOSING:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            self._release()  # the answer to our own close frame
            return
        if len(payload) == 1:
            return self._fail(CLOSE_PROTOCOL_ERROR, "close frame of one byte")
        code = None
        if payload:
            code = struct.unpack("!H", payload[:2])[0]
            if code not in _VALID_CLOSE_CODES and not 3000 <= code <= 4999:
                return self._fail(CLOSE_PROTOCOL_ERROR, f"close code {code} is not allowed")
            try:
                payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                return self._fail(CLOSE_INVALID_DATA, "close reason is not UTF-8")
        self._answer_close(code)

    def _message(self, opcode: int, payload: bytes) -> None:
        if self.state != OPEN:
            return  # RFC 6455 §1.4: data after a close frame is discarded
        try:
            if opcode == OP_BINARY:
                self.listener.on_binary(payload)
                return
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                return self._fail(CLOSE_INVALID_DATA, "text frame is not UTF-8")
            pending = self.listener.on_text(text)
        except Exception:
            logger.exception("a socket's message handler failed")
            return self._fail(CLOSE_INTERNAL_ERROR, "internal error")
        if pending is not None:
            self._busy = True
            self._loop.create_task(pending).add_done_callback(self._handled)

    def _handled(self, task: asyncio.Task[None]) -> None:
        self._busy = False
        if not task.cancelled() and task.exception() is not None:
            logger.error("a socket's message handler failed", exc_info=task.exception())
            self._fail(CLOSE_INTERNAL_ERROR, "internal error")
            return
        if self.state != CLOSED:
            self._parse()
            if not self._busy:
                self._resume_reading()
