"""``/api/disconnect``'s reach: every node closes the disconnected user's sockets (close code 4403)."""

from __future__ import annotations

import logging

from fastim.domain.model import Notice, UserDisconnected
from fastim.domain.ports import Broker
from fastim.interfaces.ws.connections import Connections

logger = logging.getLogger(__name__)

CLOSE_DISCONNECTED = 4403
DISCONNECTED_REASON = "disconnected by the server"


class Disconnects:
    """Listens for :class:`UserDisconnected` notices (from the node's first admitted socket on) and acts on them."""

    def __init__(self, connections: Connections, broker: Broker) -> None:
        self._connections = connections
        self._broker = broker
        self._listening = False

    async def follow(self, socket, user_id: str) -> None:
        """Index ``socket`` under its user, so that a disconnect of that user reaches it."""
        self._connections.identify(socket, user_id)
        if not self._listening:
            self._listening = True
            await self._broker.watch_notices(self._on_notice)

    def _on_notice(self, notice: Notice) -> None:
        if not isinstance(notice, UserDisconnected):
            return
        closing = self._connections.close_user(notice.user_id, CLOSE_DISCONNECTED, DISCONNECTED_REASON)
        if closing:
            logger.info("user %s disconnected by the server: closing %d sockets", notice.user_id, closing)
