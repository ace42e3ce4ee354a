"""What both WebSocket endpoints share: origin policy, path checks, the 440 rule, safe sends."""

from __future__ import annotations

import logging
import re

import tornado.websocket

from fastim.domain.errors import AuthenticationFailed
from fastim.domain.sessions import Sessions
from fastim.interfaces.http.gate import CorsPolicy
from fastim.interfaces.http.schemas import ID_MAX_LENGTH
from fastim.interfaces.ws.frames import CLOSE_BAD_PATH, CLOSE_LOGIN_REQUIRED, LOGIN_REQUIRED_FRAME

logger = logging.getLogger(__name__)

_ID = re.compile(rf"^[^\s/]{{1,{ID_MAX_LENGTH}}}$")


class Socket(tornado.websocket.WebSocketHandler):
    """Base of the chat and group-list sockets."""

    def initialize(self, sessions: Sessions, cors: CorsPolicy) -> None:
        self.sessions = sessions
        self.cors = cors

    def check_origin(self, origin: str) -> bool:
        # Tornado already admits same-origin pages; other origins follow [server] allowed_origins.
        return self.cors.allows(origin)

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

    def send(self, text: str) -> None:
        """Queue ``text``; a socket that is already gone is simply skipped."""
        if self.ws_connection is None or self.ws_connection.is_closing():
            return
        try:
            self.write_message(text)
        except tornado.websocket.WebSocketClosedError:
            pass
