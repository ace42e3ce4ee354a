"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

from fastim.domain.ports import Broker, Storage
from fastim.interfaces.errors import CODE_UNAVAILABLE
from fastim.interfaces.http.base import ApiHandler, HttpContext


class HealthHandler(ApiHandler):
    """200 while the node serves requests at all."""

    http_method = "get"

    def get(self) -> None:
        self.ok(msg="ok")


class ReadyHandler(ApiHandler):
    """200 when the storage answers and events reach the node, 503 otherwise: take the node out of rotation."""

    http_method = "get"

    def initialize(self, http: HttpContext, storage: Storage, broker: Broker) -> None:
        super().initialize(http)
        self.storage = storage
        self.broker = broker

    async def get(self) -> None:
        if not await self.storage.ping():
            self.set_status(503)
            self.reply(CODE_UNAVAILABLE, "storage unavailable")
        elif not self.broker.healthy:
            self.set_status(503)
            self.reply(CODE_UNAVAILABLE, "events do not reach this node (pub/sub reconnecting)")
        else:
            self.ok(msg="ready")
