"""One WebSocket past its handshake: RFC 6455 frames straight on the socket, on the event loop's selector.

Tornado answers the handshake (see ``upgrade.py``); from then on a socket costs
this object, the socket and one reader registration, instead of Tornado's
stream, protocol, handler and their nine suspended coroutines per connection.
A delivery is one ``send`` call when nothing is queued.

Everything a peer sends costs the node time in proportion to the bytes it
sent: a frame's length is judged from its header before any of it is kept,
a message being assembled keeps a running size and fragment count, bytes are
appended to one growing buffer and never recopied, and once the node has
decided to close a connection no frame of it is parsed again.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from tornado.util import _websocket_mask as unmask  # Tornado's C speedup when built, else pure Python

from fastim.interfaces.ws.frames import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_INVALID_DATA,
    CLOSE_POLICY,
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
_PING = control_frame(OP_PING, b"")

# Browsers never fragment what they send and libraries cut large messages into a few
# pieces; a message in more pieces than this is a client making the node count fragments.
MAX_FRAGMENTS = 256
# Pings and pongs a peer may send: a keepalive needs one every few seconds, a burst
# covers a library that answers several of our pings at once. Past it: 1008.
CONTROL_FRAMES_PER_S = 10.0
CONTROL_FRAME_BURST = 50


@dataclass(frozen=True)
class TransportLimits:
    """What one peer may make its transport hold or do; one instance serves every socket of a node."""

    max_unsent_bytes: int  # [im] max_pending_bytes: unsent bytes past which the listener is told (1008)
    max_message_bytes: int  # the largest message assembled; a larger one is refused from its header (1009)
    max_fragments: int = MAX_FRAGMENTS  # frames per message; more closes with 1008
    control_frames_per_s: float = CONTROL_FRAMES_PER_S  # pings and pongs from the peer; faster closes with 1008
    control_frame_burst: int = CONTROL_FRAME_BURST


class Listener(Protocol):
    """What a transport tells the socket it carries."""

    def on_text(self, text: str) -> Awaitable[None] | None:
        """A complete text message; return an awaitable to hold the next message until it is done."""

    def on_binary(self, data: bytes) -> None: ...

    def on_backlog_full(self) -> None:
        """The peer stopped reading and the unsent bytes passed the bound; the write was not queued."""

    def on_closed(self) -> None:
        """The connection is gone, cleanly or not; called exactly once."""


class _Assembly:
    """A message that spans several frames, or a text frame that spans several reads.

    Text is checked as it arrives, so invalid UTF-8 closes the connection at
    the first bad byte, not at the end of a long message.
    """

    __slots__ = ("opcode", "fragmented", "parts", "size", "frames", "decoder", "checked")

    def __init__(self, opcode: int) -> None:
        self.opcode = opcode
        self.fragmented = False  # a first frame without FIN arrived: continuations are expected
        self.parts: list = []  # decoded text or raw bytes of the frames received whole
        self.size = 0  # payload bytes of those frames
        self.frames = 0
        self.decoder = codecs.getincrementaldecoder("utf-8")() if opcode == OP_TEXT else None
        self.checked = 0  # payload bytes of the incomplete frame already fed to the decoder

    def feed(self, data: bytes, final: bool) -> None:
        """Decode a piece of text; raises UnicodeDecodeError at the first invalid byte."""
        text = self.decoder.decode(data, final)
        if text:
            self.parts.append(text)

    def message(self) -> str | bytes:
        return "".join(self.parts) if self.opcode == OP_TEXT else b"".join(self.parts)


def _unmasked(buf: bytes | bytearray, head: int, start: int, stop: int) -> bytes:
    """Bytes ``start:stop`` of ``buf``, within the payload of the frame whose mask is at ``buf[head:head + 4]``."""
    mask = bytes(buf[head:head + 4])
    shift = (start - head - 4) % 4
    if shift:
        mask = mask[shift:] + mask[:shift]
    data = buf[start:stop] if type(buf) is bytes else bytes(memoryview(buf)[start:stop])
    return unmask(mask, data)  # the C speedup takes bytes only


class Transport:
    """A server-side WebSocket on a non-blocking socket.

    Writes go to the kernel at once when nothing is queued; what the kernel
    does not take waits in one buffer, bounded by ``max_unsent`` bytes
    (pongs and pings included). Reads parse frames as they arrive: masked
    client frames, fragmentation, ping/pong and the close handshake;
    violations close with the RFC's codes (1002 protocol, 1007 bad UTF-8,
    1009 too big, 1008 too many fragments or control frames). One message
    is handled at a time, in order.
    """

    __slots__ = (
        "_sock", "_fd", "_loop", "_send", "listener", "_limits", "state", "_unsent", "_inbox",
        "_assembly", "_busy", "_reading", "_timer", "close_code", "_control_at", "ping_at", "_on_release",
    )

    def __init__(
        self,
        sock: socket.socket,
        limits: TransportLimits,
        *,
        unread: bytes = b"",
        on_release: Callable[[], None] | None = None,
    ) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = asyncio.get_running_loop()
        self._send = sock.send
        self.listener: Listener | None = None
        self._limits = limits
        self.state = OPEN
        self._unsent: bytearray | None = None  # what the kernel has not taken yet, oldest first
        self._inbox: bytearray | None = bytearray(unread) if unread else None  # received, not parsed yet
        self._assembly: _Assembly | None = None
        self._busy = False  # a message is being handled: the next ones wait
        self._reading = False
        self._timer: asyncio.TimerHandle | None = None
        self.close_code: int | None = None  # what the peer's close frame said
        self._control_at = 0.0  # the peer's control frames, as a rate: when its budget is spent
        self.ping_at = 0.0  # loop time of our unanswered keepalive ping; 0 when none is due
        self._on_release = on_release  # the node's count of open connections

    @property
    def max_unsent(self) -> int:
        return self._limits.max_unsent_bytes

    def start(self, listener: Listener) -> None:
        """Hand frames to ``listener`` from now on."""
        self.listener = listener
        self._resume_reading()
        if self._inbox:
            self._loop.call_soon(self._parse_inbox)  # frames that came with the handshake

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
        elif len(unsent) + len(data) > self._limits.max_unsent_bytes:
            self.listener.on_backlog_full()
        else:
            unsent += data

    def ping(self) -> None:
        """Send a keepalive ping (through the bounded write path) unless one is still unanswered."""
        if self.state == OPEN and not self.ping_at:
            self.ping_at = self._loop.time()
            self.write(_PING)

    def _queue(self, data: bytes) -> None:
        """Queue past the bound: our one close frame must go out whatever the backlog."""
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
            if self.state == CLOSING:
                self._shut_write()

    @property
    def unsent_bytes(self) -> int:
        return len(self._unsent) if self._unsent is not None else 0

    # -- closing -----------------------------------------------------------------------

    def close(self, code: int | None = None, reason: str = "") -> None:
        """Send a close frame and read nothing more; the socket is cut at the peer's EOF or after CLOSE_TIMEOUT_S."""
        if self.state != OPEN:
            return
        self._end(close_frame(code, reason))

    def abort(self) -> None:
        """Cut the connection now, without waiting for anything (a peer that stopped answering)."""
        if self.state != CLOSED:
            self.state = CLOSING
            self._release()

    def _answer_close(self, code: int | None) -> None:
        """The peer started the close handshake: echo its code, then end the connection."""
        self.close_code = code
        self._end(close_frame(code, ""))

    def _fail(self, code: int, reason: str) -> None:
        """A protocol violation (RFC 6455 §7.1.7): say why, then end the connection."""
        if self.state == OPEN:
            self._end(close_frame(code, reason))

    def _end(self, frame: bytes) -> None:
        """Queue our close frame, then drain: read and drop input, send FIN once the frame is out.

        Nothing the peer sends from now on is parsed, so a client cannot make
        a closing connection cost more than reading its bytes. Draining until
        the peer's EOF, instead of closing at once, keeps the kernel from
        answering unread data with a reset that could destroy our close frame
        before the peer read it.
        """
        self.state = CLOSING
        self._inbox = None
        self._assembly = None
        self._queue(frame)  # sends FIN once the frame is out
        if self._timer is None and self.state != CLOSED:
            self._timer = self._loop.call_later(CLOSE_TIMEOUT_S, self._release)
        if not self._busy:
            self._resume_reading()  # see the peer's EOF even if a read-ahead paused reading

    def _shut_write(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._lost()

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
        self._inbox = None
        self._assembly = None
        self._sock.close()
        release, self._on_release = self._on_release, None
        if release is not None:
            release()
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
        self.ping_at = 0.0  # whatever it sends shows the peer is there
        if self.state != OPEN:
            return  # draining: read and dropped
        inbox = self._inbox
        if inbox is None:
            if not self._busy:
                self._parse(data)
                return
            inbox = self._inbox = bytearray(data)
        else:
            inbox += data  # grows in place: a large frame is never recopied
        if not self._busy:
            self._parse(inbox)
        elif len(inbox) > READ_AHEAD_BYTES:
            self._pause_reading()

    def _parse_inbox(self) -> None:
        if self._inbox is not None and self.state == OPEN:
            self._parse(self._inbox)

    def _parse(self, buf: bytes | bytearray) -> None:
        """Take every complete frame out of ``buf``, until one message needs waiting for."""
        size = len(buf)
        at = 0
        limits = self._limits
        while not self._busy and self.state == OPEN:
            if size - at < 2:
                break
            first, second = buf[at], buf[at + 1]
            opcode, length, head = first & OPCODE, second & LENGTH, at + 2
            if first & RSV:
                return self._fail(CLOSE_PROTOCOL_ERROR, "reserved bits set; no extension was agreed")
            if not second & MASKED:
                return self._fail(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
            if length == 126:
                if size - at < 4:
                    break
                length, head = int.from_bytes(buf[at + 2:at + 4]), at + 4
            elif length == 127:
                if size - at < 10:
                    break
                length, head = int.from_bytes(buf[at + 2:at + 10]), at + 10
            assembly = self._assembly
            if opcode & 0x8:
                if opcode > OP_PONG:
                    return self._fail(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
                if length > 125 or not first & FIN:
                    return self._fail(CLOSE_PROTOCOL_ERROR, "control frames are short and unfragmented")
            elif opcode == OP_CONTINUATION:
                if assembly is None or not assembly.fragmented:
                    return self._fail(CLOSE_PROTOCOL_ERROR, "continuation frame without a message")
                if length + assembly.size > limits.max_message_bytes:
                    return self._fail(CLOSE_TOO_BIG, f"message over {limits.max_message_bytes} bytes")
                if not first & FIN and assembly.frames + 1 >= limits.max_fragments:
                    return self._fail(CLOSE_POLICY, f"message in more than {limits.max_fragments} fragments")
            elif opcode == OP_TEXT or opcode == OP_BINARY:
                if assembly is not None and assembly.fragmented:
                    return self._fail(CLOSE_PROTOCOL_ERROR, "a new message before the fragmented one ended")
                if length > limits.max_message_bytes:
                    return self._fail(CLOSE_TOO_BIG, f"message over {limits.max_message_bytes} bytes")
            else:
                return self._fail(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
            end = head + 4 + length
            if size < end:
                if opcode == OP_TEXT or (assembly is not None and assembly.decoder is not None and not opcode & 0x8):
                    self._check_partial(buf, head, size)  # fail at the first bad byte, not at the frame's end
                break
            at = end
            if assembly is not None and assembly.checked:  # text whose start was decoded as it came
                self._piece(opcode, first & FIN, _unmasked(buf, head, head + 4 + assembly.checked, end), length)
                continue
            payload = _unmasked(buf, head, head + 4, end) if length else b""
            if opcode & 0x8:
                self._control(opcode, payload)
            elif assembly is None and first & FIN and opcode != OP_CONTINUATION:
                self._message(opcode, payload)  # the common case: a whole message in one frame
            else:
                self._piece(opcode, first & FIN, payload, length)
        if self.state != OPEN:
            self._inbox = None
        elif at == size:
            self._inbox = None
        elif buf is self._inbox:
            if at:
                del buf[:at]  # from the front of a bytearray: no copy of the rest
        else:
            self._inbox = bytearray(memoryview(buf)[at:])

    def _check_partial(self, buf: bytes | bytearray, head: int, size: int) -> None:
        """Feed the text received so far of an incomplete frame to the message's UTF-8 decoder."""
        assembly = self._assembly
        if assembly is None:
            assembly = self._assembly = _Assembly(OP_TEXT)
        start = head + 4 + assembly.checked
        if size <= start:
            return
        data = _unmasked(buf, head, start, size)
        assembly.checked += len(data)
        try:
            assembly.feed(data, False)
        except UnicodeDecodeError:
            self._fail(CLOSE_INVALID_DATA, "text frame is not UTF-8")

    def _piece(self, opcode: int, fin: int, data: bytes, length: int) -> None:
        """A frame of a message that spans frames (or whose one frame spanned reads).

        ``data`` is the frame's payload, less what :meth:`_check_partial` decoded already.
        """
        assembly = self._assembly
        if assembly is None:
            assembly = self._assembly = _Assembly(opcode)
        if opcode != OP_CONTINUATION and not fin:
            assembly.fragmented = True
        if assembly.decoder is not None:
            try:
                assembly.feed(data, bool(fin))
            except UnicodeDecodeError:
                return self._fail(CLOSE_INVALID_DATA, "text frame is not UTF-8")
            assembly.checked = 0
        else:
            assembly.parts.append(data)
        assembly.size += length
        assembly.frames += 1
        if fin:
            self._assembly = None
            message = assembly.message()
            if assembly.opcode == OP_TEXT:
                self._dispatch_text(message)
            else:
                self._dispatch_binary(message)

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_CLOSE:
            return self._on_close_frame(payload)
        limits = self._limits
        now = self._loop.time()
        interval = 1.0 / limits.control_frames_per_s
        spent = max(self._control_at, now) + interval
        if spent - now > limits.control_frame_burst * interval:
            return self._fail(CLOSE_POLICY, f"more than {limits.control_frames_per_s:g} pings or pongs a second")
        self._control_at = spent
        if opcode == OP_PING:
            self.write(control_frame(OP_PONG, payload))  # RFC 6455 §5.5.2; counts toward max_unsent

    def _on_close_frame(self, payload: bytes) -> None:
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
        if opcode == OP_BINARY:
            self._dispatch_binary(payload)
            return
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            return self._fail(CLOSE_INVALID_DATA, "text frame is not UTF-8")
        self._dispatch_text(text)

    def _dispatch_binary(self, data: bytes) -> None:
        try:
            self.listener.on_binary(data)
        except Exception:
            logger.exception("a socket's message handler failed")
            self._fail(CLOSE_INTERNAL_ERROR, "internal error")

    def _dispatch_text(self, text: str) -> None:
        try:
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
        if self.state == OPEN:
            self._parse_inbox()
        if not self._busy:
            self._resume_reading()
