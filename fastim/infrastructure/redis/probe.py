"""An end-to-end check of a node's pub/sub path: a probe published on a channel of its own must come back.

A pub/sub connection can stop delivering without failing: a proxy or a
firewall that drops it silently, a Redis that lost the subscription. The
probe publishes on ``fastim:probe:{node}`` (outside the ``mq:`` namespace
fast-im's nodes read) every ``interval_s``; when one has not come back after
``timeout_s``, the path is unhealthy: the broker drops the connection and
subscribes afresh, and the Hub reads every local group back by seq.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

from fastim.infrastructure.redis.client import STORAGE_ERRORS, describe

logger = logging.getLogger(__name__)

PROBE_PREFIX = "fastim:probe:"
# A probe every 2 s costs a PUBLISH; one that takes 5 s to come back means the path is broken.
PROBE_INTERVAL_S = 2.0
PROBE_TIMEOUT_S = 5.0


class Probe:
    def __init__(
        self,
        publish: Callable[[str, str], Awaitable[object]],
        active: Callable[[], bool],
        on_silence: Callable[[], None],
        interval_s: float = PROBE_INTERVAL_S,
        timeout_s: float = PROBE_TIMEOUT_S,
    ) -> None:
        self.channel = PROBE_PREFIX + uuid.uuid4().hex[:16]
        self._publish = publish
        self._active = active  # the path is up and subscribed: worth probing
        self._on_silence = on_silence
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._sent_at: float | None = None  # loop time of the probe awaited
        self._healthy = True
        self._count = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def healthy(self) -> bool:
        """False from a probe's timeout until a probe comes back."""
        return self._healthy

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="fastim-pubsub-probe")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    def received(self) -> None:
        """A probe came back through the pub/sub connection."""
        self._sent_at = None
        if not self._healthy:
            logger.info("redis pub/sub delivers again")
        self._healthy = True

    def reset(self) -> None:
        """The connection was replaced: what was awaited on the old one will not come."""
        self._sent_at = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._interval_s)
            if not self._active():
                self._sent_at = None
                continue
            now = loop.time()
            if self._sent_at is not None:
                if now - self._sent_at >= self._timeout_s:
                    logger.warning("redis pub/sub delivered no probe for %g s; reconnecting", now - self._sent_at)
                    self._healthy = False
                    self._sent_at = None
                    self._on_silence()
                continue
            self._count += 1
            # Awaited before the publish answers: the probe may come back first.
            self._sent_at = now
            try:
                await self._publish(self.channel, str(self._count))
            except STORAGE_ERRORS as exc:
                logger.debug("cannot publish a pub/sub probe: %s", describe(exc))
                self._sent_at = None
