"""Server pings: a WebSocket whose peer went away without a word (a half-open TCP connection) is found and freed.

Every ``ping_interval`` seconds each open socket gets a ping; a socket that
has sent nothing at all (no pong, no frame) within ``ping_timeout`` of its
ping is closed and its resources are freed at once. One node-wide task does
this for every socket, in slices, so that a node with many sockets never
stalls on it; a socket costs two slots of its transport, no timer of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fastim.interfaces.metrics import Metrics
from fastim.interfaces.ws.connections import Connections
from fastim.interfaces.ws.transport import Transport

logger = logging.getLogger(__name__)

# Sockets handled per loop turn: other work gets the loop between slices.
SLICE = 500
# The close code and reason the websockets library uses for the same event.
CLOSE_PING_TIMEOUT = 1011
PING_TIMEOUT_REASON = "keepalive ping timeout"


class Keepalive:
    def __init__(self, connections: Connections, metrics: Metrics, interval_s: float, timeout_s: float) -> None:
        self._connections = connections
        self._metrics = metrics
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None
        self._checks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="fastim-keepalive")

    async def close(self) -> None:
        tasks = [task for task in (self._task, *self._checks) if task is not None]
        self._task = None
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._interval_s)
            await self._each(Transport.ping)
            sent_by = loop.time()
            loop.call_later(self._timeout_s, self._start_check, sent_by)

    def _start_check(self, sent_by: float) -> None:
        task = asyncio.get_running_loop().create_task(self._each(lambda t: self._cut_if_silent(t, sent_by)))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    def _cut_if_silent(self, transport: Transport, sent_by: float) -> None:
        if transport.ping_at and transport.ping_at <= sent_by:
            self._metrics.keepalive_timeouts.inc()
            transport.close(CLOSE_PING_TIMEOUT, PING_TIMEOUT_REASON)
            transport.abort()  # a peer that does not answer will not answer our close either

    async def _each(self, action: Callable[[Transport], None]) -> None:
        for index, socket in enumerate(self._connections.snapshot()):
            if index and index % SLICE == 0:
                await asyncio.sleep(0)
            try:
                action(socket.transport)
            except Exception:  # one socket's failure must not end the keepalive of all the others
                logger.exception("keepalive of a socket failed")
