"""What both WebSocket endpoints share: origin policy, path checks, the 440 rule, bounded sends."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import tornado.iostream
import tornado.websocket

from fastim.domain.errors import AuthenticationFailed
from fastim.domain.sessions import Sessions
from fastim.interfaces.http.gate import CorsPolicy
from fastim.interfaces.http.schemas import ID_MAX_LENGTH
from fastim.interfaces.metrics import Metrics
from fastim.interfaces.ws.connections import Connections
from fastim.interfaces.ws.frames import (
    CLOSE_BAD_PATH,
    CLOSE_LOGIN_REQUIRED,
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN_LATER,
    ERROR_UNAVAILABLE,
    LOGIN_REQUIRED_FRAME,
    error_frame,
    text_frame,
)

logger = logging.getLogger(__name__)

_ID = re.compile(rf"^[^\s/]{{1,{ID_MAX_LENGTH}}}$")


@dataclass(frozen=True)
class SocketContext:
    """What every socket of the node needs, built once by the container."""

    sessions: Sessions
    cors: CorsPolicy
    connections: Connections
    metrics: Metrics
    max_pending_bytes: int


class Socket(tornado.websocket.WebSocketHandler):
    """Base of the chat and group-list sockets."""

    kind = "socket"  # "chat" or "list": the label of the open-sockets gauge

    def initialize(self, context: SocketContext) -> None:
        self.context = context
        self.sessions = context.sessions
        self.metrics = context.metrics
        self.closed = False

    def check_origin(self, origin: str) -> bool:
        # Tornado already admits same-origin pages; other origins follow [server] allowed_origins.
        return self.context.cors.allows(origin)

    def register(self) -> None:
        """Count the socket and bound its unsent backlog; call first thing in ``open``."""
        self.context.connections.add(self.kind, self)
        stream = self.ws_connection.stream
        # The stream refuses writes past this many unsent bytes (StreamBufferFullError).
        stream.max_write_buffer_size = self.context.max_pending_bytes
        self._send = stream.socket.send  # the fast path of write_frames

    def on_close(self) -> None:
        self.closed = True
        self.context.connections.discard(self.kind, self)

    def valid_ids(self, **ids: str) -> bool:
        """Ids from the path must look like ids; otherwise the socket is closed with a reason."""
        for name, value in ids.items():
            if not _ID.match(value):
                self.close(CLOSE_BAD_PATH, f"invalid {name}")
                return False
        return True

    async def admitted(self, user_id: str, token: str) -> bool:
        """fast-im's rule: with login_auth a bad token gets the text 440, then the socket closes."""
        try:
            await self.sessions.authorize_socket(user_id, token)
        except AuthenticationFailed:
            self.send(LOGIN_REQUIRED_FRAME)
            self.close(CLOSE_LOGIN_REQUIRED, "login required")
            return False
        return True

    def unavailable_at_open(self) -> None:
        """Redis did not answer while the socket opened: say so, and ask the client to come back."""
        self.metrics.storage_errors.inc()
        self.send(error_frame(ERROR_UNAVAILABLE, "storage unavailable, reconnect later"))
        self.close(CLOSE_TRY_AGAIN_LATER, "storage unavailable")

    def send(self, text: str) -> None:
        """Queue one text frame of this socket's own (snapshot, error frame, group list)."""
        self.write_frames(text_frame(text.encode("utf-8")))

    def write_frames(self, data: bytes) -> None:
        """Queue complete WebSocket frames built by the Hub, bypassing per-socket framing.

        This is the per-socket cost of every delivery, so it does as little as
        it can: when nothing is queued on the stream, the bytes go straight to
        the kernel with one send call; the stream takes over only what the
        kernel did not take, so frames keep their order and the backlog bound
        (max_pending_bytes) holds.
        """
        connection = self.ws_connection
        if connection is None or connection.server_terminated or connection.client_terminated:
            return
        stream = connection.stream
        # stream.writing(), minus two Python calls: every delivery pays for this check.
        if stream._total_write_index == stream._total_write_done_index:
            try:
                sent = self._send(data)
            except BlockingIOError:  # the kernel's buffer is full: the stream waits for room
                sent = 0
            except OSError:
                return  # closed or reset by the peer: the stream sees it on its next read
            if sent == len(data):
                return
            data = data[sent:]
        try:
            stream.write(data)
        except tornado.iostream.StreamClosedError:
            pass
        except tornado.iostream.StreamBufferFullError:
            self.drop_slow_consumer()

    def drop_slow_consumer(self) -> None:
        """The client stopped reading: close it rather than let its backlog grow the node's memory."""
        self.metrics.slow_consumer_disconnects.inc()
        logger.warning(
            "closing a %s socket whose unsent backlog passed %d bytes", self.kind, self.context.max_pending_bytes
        )
        # Lift the bound so the close frame itself can be queued behind the backlog.
        self.ws_connection.stream.max_write_buffer_size = None
        self.close(CLOSE_POLICY, f"too slow: more than {self.context.max_pending_bytes} bytes unsent")
