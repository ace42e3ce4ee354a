"""What both WebSocket kinds share: registration, path checks, the 440 rule, bounded sends."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

from fastim.domain.errors import AuthenticationFailed
from fastim.domain.ids import is_valid_id
from fastim.domain.model import Grant, GrantKind
from fastim.domain.sessions import Sessions
from fastim.interfaces.metrics import Metrics
from fastim.interfaces.ws.connections import Connections
from fastim.interfaces.ws.disconnects import Disconnects
from fastim.interfaces.ws.frames import (
    CLOSE_BAD_PATH,
    CLOSE_LOGIN_REQUIRED,
    CLOSE_NOT_A_MEMBER,
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN_LATER,
    ERROR_TOKEN_REFUSED,
    ERROR_UNAVAILABLE,
    LOGIN_REQUIRED_FRAME,
    error_frame,
    refreshed_frame,
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
    disconnects: Disconnects


REFRESH_PREFIX = '{"refresh"'  # a text frame {"refresh":"<jwt>"} on a socket opened with a JWT


class Socket:
    """One open WebSocket of the node, on its transport; base of the chat and group-list sockets.

    Slotted, because a node holds tens of thousands of them: what a socket
    costs in memory is what the node's capacity is.
    """

    __slots__ = ("context", "transport", "write_frames", "closed", "login", "grant", "expiry")
    kind = "socket"  # "chat" or "list": the label of the open-sockets gauge

    def __init__(self, context: SocketContext, transport: Transport) -> None:
        self.context = context
        self.transport = transport
        # What every delivery calls: the transport's own write, with no call in between.
        self.write_frames = transport.write
        self.closed = False
        self.login: tuple[str, str] | None = None  # (userId, token) checked at open, under login_auth
        self.grant: Grant | None = None  # what the token checked at open allows
        self.expiry: asyncio.TimerHandle | None = None  # a JWT socket's end, unless refreshed
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
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None

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
        """fast-im's rule: with login_auth a bad token gets the text 440, then the socket closes.

        A socket opened with a login token lives as long as the token (SessionWatch); one opened
        with a JWT until the JWT's exp, unless the client sends a fresh one. Either way the
        application can close it (``/api/disconnect``).
        """
        try:
            grant = await self.context.sessions.authorize_socket(user_id, token)
        except AuthenticationFailed:
            self.send(LOGIN_REQUIRED_FRAME)
            self.close(CLOSE_LOGIN_REQUIRED, "login required")
            return False
        if self.closed:
            return True  # the caller sees it closed
        self.grant = grant
        await self.context.disconnects.follow(self, user_id)
        if grant is None or self.closed:
            return True
        if grant.kind is GrantKind.JWT:
            self.expire_in(grant.lives_s)
        else:
            self.login = (user_id, token)  # before the await, so on_closed can undo it
            await self.context.session_watch.add(self, user_id, token, grant.lives_s)
        return True

    def expire_in(self, seconds: float) -> None:
        """End this socket's login in ``seconds`` (its JWT's exp), unless refreshed before."""
        if self.expiry is not None:
            self.expiry.cancel()
        self.expiry = asyncio.get_running_loop().call_later(seconds, self.end_login)

    def is_refresh(self, text: str) -> bool:
        """Whether a text frame is a JWT refresh (only on a socket opened with a JWT)."""
        return self.grant is not None and self.grant.kind is GrantKind.JWT and text.startswith(REFRESH_PREFIX)

    def refresh(self, text: str) -> None:
        """Take ``{"refresh":"<jwt>"}``: a fresh JWT of the same user moves the socket's end to its exp.

        A refused one gets an error frame and changes nothing: the socket still ends at the old exp.
        """
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict) or len(data) != 1 or not isinstance(data.get("refresh"), str):
            self.refuse("token_refused", ERROR_TOKEN_REFUSED, 'a refresh is {"refresh":"<jwt>"}')
            return
        try:
            grant = self.context.sessions.refresh(self.grant, data["refresh"])
        except AuthenticationFailed as exc:
            self.refuse("token_refused", ERROR_TOKEN_REFUSED, f"token refused: {exc}"[:200])
            return
        group_id = self.granted_group()
        if group_id is not None and not grant.allows(group_id):
            self.close(CLOSE_NOT_A_MEMBER, "the new token does not grant this group")
            return
        self.grant = grant
        self.expire_in(grant.lives_s)
        self.send(refreshed_frame(grant.expires_at))

    def granted_group(self) -> str | None:
        """The group this socket's token must grant (a chat socket's), or None."""
        return None

    def end_login(self) -> None:
        """The token this socket was opened with ended (logout, a new login, expiry): 440, then close 4440."""
        self.login = None
        self.expiry = None
        self.context.metrics.sessions_ended.inc()
        self.send(LOGIN_REQUIRED_FRAME)
        self.close(CLOSE_LOGIN_REQUIRED, "login ended; log in again")

    def unavailable_at_open(self) -> None:
        """Redis did not answer while the socket opened: say so, and ask the client to come back."""
        self.context.metrics.storage_errors.inc()
        self.send(error_frame(ERROR_UNAVAILABLE, "storage unavailable, reconnect later"))
        self.close(CLOSE_TRY_AGAIN_LATER, "storage unavailable")
