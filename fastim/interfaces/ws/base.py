"""What both WebSocket kinds share: registration, path checks, the 440 rule, bounded sends."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastim.domain.errors import AuthenticationFailed
from fastim.domain.ids import is_valid_id
from fastim.domain.sessions import Sessions
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
from fastim.interfaces.ws.session_watch import SessionWatch
from fastim.interfaces.ws.transport import Transport

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SocketContext:
    """What every socket of the node needs, built once by the container."""

    sessions: Sessions
    connections: Connections
    metrics: Metrics
    session_watch: SessionWatch


class Socket:
    """One open WebSocket of the node, on its transport; base of the chat and group-list sockets.

    Slotted, because a node holds tens of thousands of them: what a socket
    costs in memory is what the node's capacity is.
    """

    __slots__ = ("context", "transport", "write_frames", "closed", "login")
    kind = "socket"  # "chat" or "list": the label of the open-sockets gauge

    def __init__(self, context: SocketContext, transport: Transport) -> None:
        self.context = context
        self.transport = transport
        # What every delivery calls: the transport's own write, with no call in between.
        self.write_frames = transport.write
        self.closed = False
        self.login: tuple[str, str] | None = None  # (userId, token) checked at open, under login_auth
        context.connections.add(self.kind, self)
        transport.start(self)

    # -- what the transport tells us -----------------------------------------------------

    def on_backlog_full(self) -> None:
        """The client stopped reading: close it rather than let its backlog grow the node's memory."""
        limit = self.transport.max_unsent
        self.context.metrics.slow_consumer_disconnects.inc()
        logger.warning("closing a %s socket whose unsent backlog passed %d bytes", self.kind, limit)
        self.close(CLOSE_POLICY, f"too slow: more than {limit} bytes unsent")

    def on_closed(self) -> None:
        self.closed = True
        self.context.connections.discard(self.kind, self)
        if self.login is not None:
            self.context.session_watch.discard(self, *self.login)

    # -- what we do ----------------------------------------------------------------------

    def close(self, code: int | None = None, reason: str = "") -> None:
        self.transport.close(code, reason)

    def send(self, text: str) -> None:
        """Queue one text frame of this socket's own (snapshot, error frame, group list)."""
        self.write_frames(text_frame(text.encode("utf-8")))

    def refuse(self, reason: str, code: int, msg: str) -> None:
        """Answer a refused frame with an error frame; the socket stays open."""
        self.context.metrics.rejected_frames.labels(reason).inc()
        self.send(error_frame(code, msg))

    def valid_ids(self, **ids: str) -> bool:
        """Ids from the path must look like ids; otherwise the socket is closed with a reason."""
        for name, value in ids.items():
            if not is_valid_id(value):
                self.close(CLOSE_BAD_PATH, f"invalid {name}")
                return False
        return True

    async def admitted(self, user_id: str, token: str) -> bool:
        """fast-im's rule: with login_auth a bad token gets the text 440, then the socket closes."""
        try:
            lives_s = await self.context.sessions.authorize_socket(user_id, token)
        except AuthenticationFailed:
            self.send(LOGIN_REQUIRED_FRAME)
            self.close(CLOSE_LOGIN_REQUIRED, "login required")
            return False
        if lives_s is not None and not self.closed:
            self.login = (user_id, token)  # before the await, so on_closed can undo it
            await self.context.session_watch.add(self, user_id, token, lives_s)
        return True

    def end_login(self) -> None:
        """The token this socket was opened with ended (logout, a new login, expiry): 440, then close 4440."""
        self.login = None
        self.context.metrics.sessions_ended.inc()
        self.send(LOGIN_REQUIRED_FRAME)
        self.close(CLOSE_LOGIN_REQUIRED, "login ended; log in again")

    def unavailable_at_open(self) -> None:
        """Redis did not answer while the socket opened: say so, and ask the client to come back."""
        self.context.metrics.storage_errors.inc()
        self.send(error_frame(ERROR_UNAVAILABLE, "storage unavailable, reconnect later"))
        self.close(CLOSE_TRY_AGAIN_LATER, "storage unavailable")
