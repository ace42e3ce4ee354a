"""The Redis broker: PUBLISH on ``mq:{groupId}``, and one pub/sub connection per node fanning events out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import redis.asyncio as redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError

from fastim.domain.codec import encode_event, encode_notice
from fastim.domain.model import Event, Notice
from fastim.domain.ports import EventListener, NoticeListener, ResumeListener
from fastim.infrastructure.listeners import call_each
from fastim.infrastructure.redis import payloads
from fastim.infrastructure.redis.backoff import BACKOFF_CAP_SECONDS, BACKOFF_INITIAL_SECONDS, backoff_seconds
from fastim.infrastructure.redis.keys import NOTICES_CHANNEL, STANDALONE
from fastim.infrastructure.redis.batcher import CommandBatcher, Commands
from fastim.infrastructure.redis.client import STORAGE_ERRORS, describe, storage_errors
from fastim.infrastructure.redis.probe import PROBE_INTERVAL_S, PROBE_TIMEOUT_S, Probe

logger = logging.getLogger(__name__)

# How long one read waits for a message before the reader looks at its own
# state again (a failed SUBSCRIBE to retry, groups to add or drop).
POLL_SECONDS = 1.0


class RedisBroker:
    """Publishes on the normal client; receives on one dedicated pub/sub connection.

    The connection subscribes to ``mq:{g}`` only while ``g`` has listeners on
    this node, and to the notices channel once someone watches notices. A
    reader task, started with the first subscription, decodes each payload
    once and calls every listener of the group. It survives a bad payload, a
    failing listener and the loss of Redis: it reconnects with capped
    exponential backoff and subscribes again to every group that still has
    listeners. Subscription changes cost O(changed groups): only channels
    marked dirty since the last look are compared. A :class:`Probe` checks
    the path end to end and has a silent connection replaced.
    """

    def __init__(
        self,
        client: redis.Redis,
        batcher: Commands | None = None,
        *,
        poll_seconds: float = POLL_SECONDS,
        backoff_initial_seconds: float = BACKOFF_INITIAL_SECONDS,
        backoff_cap_seconds: float = BACKOFF_CAP_SECONDS,
        probe_interval_s: float = PROBE_INTERVAL_S,
        probe_timeout_s: float = PROBE_TIMEOUT_S,
    ) -> None:
        self._client = client
        self._batcher = batcher or CommandBatcher(client)
        self._poll_seconds = poll_seconds
        self._backoff_initial = backoff_initial_seconds
        self._backoff_cap = backoff_cap_seconds
        self._listeners: dict[str, list[EventListener]] = {}
        self._notice_listeners: list[NoticeListener] = []
        self._pubsub: PubSub | None = None
        self._subscribed: set[str] = set()  # channels SUBSCRIBEd on the current connection
        self._dirty: set[str] = set()  # channels whose listeners changed since the connection last looked
        self._lock = asyncio.Lock()  # one actor at a time changes the connection's subscriptions
        self._wakeup = asyncio.Event()  # set when the reader may have something to read
        self._reader: asyncio.Task[None] | None = None
        self._broken = ""  # why the reader must reconnect (a caller's SUBSCRIBE failed, the probe is silent)
        self._down = False  # the reader is recovering; callers leave subscribing to it
        self._failures = 0
        self._reconnects = 0
        self._resume_listeners: list[ResumeListener] = []
        self._closed = False
        self._probe = Probe(
            publish=lambda channel, payload: self._batcher.execute("PUBLISH", channel, payload),
            active=lambda: self._pubsub is not None and not self._down and self._probe.channel in self._subscribed,
            on_silence=self._silenced,
            interval_s=probe_interval_s,
            timeout_s=probe_timeout_s,
        )

    @property
    def subscribed_groups(self) -> frozenset[str]:
        """The groups whose channel is subscribed on Redis right now."""
        return _groups_of(self._subscribed)

    @property
    def healthy(self) -> bool:
        """Whether events reach this node: the connection is up and the last probe came back in time."""
        return not self._down and self._probe.healthy

    @property
    def reconnects(self) -> int:
        """How many times the pub/sub connection was re-established after a loss."""
        return self._reconnects

    def on_resume(self, listener: ResumeListener) -> None:
        self._resume_listeners.append(listener)

    async def publish(self, event: Event) -> None:
        channel = STANDALONE.channel(event.group_id)
        with storage_errors(f"publish to {channel}"):
            await self._batcher.execute("PUBLISH", channel, encode_event(event))

    async def subscribe(self, group_id: str, listener: EventListener) -> None:
        await self.subscribe_many((group_id,), listener)

    async def unsubscribe(self, group_id: str, listener: EventListener) -> None:
        await self.unsubscribe_many((group_id,), listener)

    async def subscribe_many(self, group_ids: Iterable[str], listener: EventListener) -> None:
        """Register ``listener`` on each group; it stays registered even when Redis cannot be told now.

        Registering first means a failed SUBSCRIBE loses nothing: the reader
        subscribes every group with listeners once Redis answers again.
        """
        if self._closed:
            raise RuntimeError("the broker is closed")
        for group_id in group_ids:
            self._listeners.setdefault(group_id, []).append(listener)
            self._dirty.add(STANDALONE.channel(group_id))
        self._dirty.add(self._probe.channel)
        await self._changed()

    async def unsubscribe_many(self, group_ids: Iterable[str], listener: EventListener) -> None:
        changed = False
        for group_id in group_ids:
            listeners = self._listeners.get(group_id)
            if listeners is None or listener not in listeners:
                continue
            listeners.remove(listener)
            if not listeners:
                del self._listeners[group_id]
                self._dirty.add(STANDALONE.channel(group_id))
                changed = True
        if changed:
            self._dirty.add(self._probe.channel)
            await self._sync_for_caller()

    async def notify(self, notice: Notice) -> None:
        with storage_errors(f"publish to {NOTICES_CHANNEL}"):
            await self._batcher.execute("PUBLISH", NOTICES_CHANNEL, encode_notice(notice))

    async def watch_notices(self, listener: NoticeListener) -> None:
        if self._closed:
            raise RuntimeError("the broker is closed")
        self._notice_listeners.append(listener)
        self._dirty.update((NOTICES_CHANNEL, self._probe.channel))
        await self._changed()

    async def _changed(self) -> None:
        self._start_reader()
        self._wakeup.set()
        await self._sync_for_caller()

    def _wants(self, channel: str) -> bool:
        if channel == NOTICES_CHANNEL:
            return bool(self._notice_listeners)
        if channel == self._probe.channel:
            return bool(self._listeners or self._notice_listeners)
        group_id = STANDALONE.group_of_channel(channel)
        return group_id is not None and group_id in self._listeners

    async def close(self) -> None:
        """Stop the reader and close the pub/sub connection; the client stays open. Idempotent."""
        if self._closed:
            return
        self._closed = True
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            # wait() neither re-raises the reader's cancellation nor swallows ours.
            await asyncio.wait([reader])
        await self._probe.close()
        async with self._lock:
            await self._drop_connection()

    def _silenced(self) -> None:
        """The probe says the connection stopped delivering: make the reader replace it."""
        self._broken = "no probe came back"
        self._wakeup.set()

    def _start_reader(self) -> None:
        self._probe.start()
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(
                self._read_forever(), name="fastim-redis-broker-reader"
            )

    async def _sync_for_caller(self) -> None:
        if self._closed or self._down:
            return  # the reader resubscribes when it is back
        try:
            await self._sync()
        except STORAGE_ERRORS as exc:
            logger.warning("redis pub/sub unavailable (%s); the reader will resubscribe", describe(exc))
            self._broken = "a SUBSCRIBE or UNSUBSCRIBE failed"

    async def _sync(self) -> None:
        """Make the connection's subscriptions match the listeners, for the channels marked dirty."""
        async with self._lock:
            if self._closed:
                return
            if self._pubsub is None:
                self._pubsub = self._client.pubsub()
                self._subscribed = set()
                self._probe.reset()
                self._dirty = {STANDALONE.channel(g) for g in self._listeners}
                self._dirty.update((NOTICES_CHANNEL, self._probe.channel))
            dirty, self._dirty = self._dirty, set()
            try:
                added = sorted(c for c in dirty if c not in self._subscribed and self._wants(c))
                removed = sorted(c for c in dirty if c in self._subscribed and not self._wants(c))
                if added:
                    await self._pubsub.subscribe(*added)
                    self._subscribed.update(added)
                if removed:
                    await self._pubsub.unsubscribe(*removed)
                    self._subscribed.difference_update(removed)
            except BaseException:
                self._dirty |= dirty  # looked at again on the next try
                raise

    async def _drop_connection(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        self._subscribed = set()
        self._broken = ""
        if pubsub is not None:
            try:
                await pubsub.aclose()
            except Exception as exc:  # the connection is being thrown away anyway
                logger.debug("closing the pub/sub connection failed: %s", describe(exc))

    async def _read_forever(self) -> None:
        while not self._closed:
            try:
                await self._read_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failures += 1
                if not isinstance(exc, STORAGE_ERRORS):
                    logger.exception("redis pub/sub reader failed; reconnecting")
                elif self._failures == 1:
                    logger.warning("redis pub/sub connection lost (%s); reconnecting", describe(exc))
                else:  # one warning per outage, not one per attempt
                    logger.debug("redis pub/sub reconnect attempt %d failed: %s", self._failures, describe(exc))
                self._down = True
                async with self._lock:
                    await self._drop_connection()
                await asyncio.sleep(self._backoff_seconds())

    async def _read_once(self) -> None:
        if not self._listeners and not self._notice_listeners:
            # Nothing subscribed, nothing to read: sleep until a subscribe.
            self._wakeup.clear()
            await self._wakeup.wait()
            return
        if self._broken:
            raise RedisConnectionError(self._broken)
        if self._pubsub is None or self._dirty or self._lock.locked():
            await self._sync()  # under the lock: a caller's SUBSCRIBE in flight is waited for
            if self._down:
                groups = _groups_of(self._subscribed)
                logger.info(
                    "redis pub/sub reconnected after %d failed attempts; %d groups subscribed",
                    self._failures,
                    len(groups),
                )
                self._down = False
                self._failures = 0
                self._reconnects += 1
                await self._resumed(groups)
        pubsub = self._pubsub
        if pubsub is None:
            return
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self._poll_seconds)
        if message is not None:
            await self._deliver(message)

    async def _resumed(self, groups: frozenset[str]) -> None:
        """Let the resume listeners catch up; what arrives on the channels meanwhile waits for them."""
        await call_each(self._resume_listeners, groups, failure="a resume listener failed")

    async def _deliver(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return
        channel = message.get("channel")
        if channel == self._probe.channel:
            self._probe.received()
            return
        if channel == NOTICES_CHANNEL:
            await self._deliver_notice(message.get("data", ""))
            return
        group_id = STANDALONE.group_of_channel(channel) if channel is not None else None
        if group_id is None:
            return
        event = payloads.group_event(channel, group_id, message.get("data", ""))
        if event is None:
            return
        listeners = self._listeners.get(group_id, ())
        await call_each(listeners, group_id, event, failure="a listener of group %s failed", failure_args=(group_id,))

    async def _deliver_notice(self, payload: str) -> None:
        notice = payloads.notice(payload)
        if notice is not None:
            await call_each(self._notice_listeners, notice, failure="a notice listener failed")

    def _backoff_seconds(self) -> float:
        return backoff_seconds(self._failures, self._backoff_initial, self._backoff_cap)


def _groups_of(channels: Iterable[str]) -> frozenset[str]:
    return frozenset(g for g in map(STANDALONE.group_of_channel, channels) if g is not None)
