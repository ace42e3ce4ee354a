"""The broker on a Redis Cluster: SPUBLISH on ``mq:{groupId}``, one sharded subscription connection per shard.

A group's events are published (by the append and recall scripts) with
SPUBLISH on the shard that stores the group, and reach only the nodes that
SSUBSCRIBEd there: nothing is broadcast to the other shards. A node keeps one
subscriber connection per master that owns a group it listens to (none for
the others), each with its own probe channel (a sharded channel whose slot
that master owns). When a slot moves (a failover, a migration; seen as a
``MOVED`` answer, a server-side ``sunsubscribe``, a lost connection or a new
slot map) its channels are subscribed where the slot went, and the groups
are handed to the resume listeners, which read what they missed by seq.
Node-to-node notices are rare and go by classic pub/sub, which a cluster
carries to every node.

Work is incremental: a subscribe or an unsubscribe looks at its own groups
only; all groups are looked at again only when the slot map changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable

from fastim.domain.codec import encode_event, encode_notice
from fastim.domain.model import Event, Notice
from fastim.domain.ports import EventListener, NoticeListener, ResumeListener
from fastim.infrastructure.listeners import Spawned, call_each_now
from fastim.infrastructure.redis.client import STORAGE_ERRORS, describe, storage_errors
from fastim.infrastructure.redis import payloads
from fastim.infrastructure.redis.backoff import backoff_seconds
from fastim.infrastructure.redis.cluster import Address, ClusterCommands, slot_of
from fastim.infrastructure.redis.endpoint import Endpoint
from fastim.infrastructure.redis.keys import CLUSTER, NOTICES_CHANNEL, Layout
from fastim.infrastructure.redis.probe import PROBE_INTERVAL_S, PROBE_PREFIX, PROBE_TIMEOUT_S, Probe
from fastim.infrastructure.redis.subscriber import Subscriber

logger = logging.getLogger(__name__)

# A subscribe waits this long for Redis to confirm before the caller goes on: confirmed, events
# published from then on are delivered; later, the resume listeners read what came meanwhile.
SUBSCRIBE_WAIT_S = 2.0
# Without news, the subscriptions are looked at again this often (a retry due, a refused command).
POLL_S = 1.0
CONNECT_TIMEOUT_S = 2.0


class _Shard:
    """The subscriber connection to one master, and the channels this node wants from it."""

    def __init__(self, broker: ShardedBroker, address: Address) -> None:
        self.broker = broker
        self.address = address
        self.wanted: set[str] = set()  # group channels (and the notices channel), not the probe's
        self.subscribed: set[str] = set()  # confirmed on the current connection
        self.sent: set[str] = set()  # (un)subscribe sent, answer awaited
        self.changed: set[str] = set()  # channels to look at on the next sync
        self.refused_: set[str] = set()  # refused by Redis: looked at again on the next poll
        self.subscriber: Subscriber | None = None
        self.connecting = False
        self.failures = 0
        self.retry_at = 0.0
        self.lost_before = False
        self.probe = Probe(
            publish=lambda channel, payload: broker.cluster.execute("SPUBLISH", channel, payload),
            active=lambda: self.subscriber is not None and self.probe.channel in self.subscribed,
            on_silence=self.silenced,
            interval_s=broker.probe_interval_s,
            timeout_s=broker.probe_timeout_s,
        )
        self.probe.channel = broker.probe_channel(address)

    @property
    def up(self) -> bool:
        return self.subscriber is not None and self.subscriber.is_open

    # -- SubscriberEvents ------------------------------------------------------------------

    def message(self, channel: str, data: str) -> None:
        if channel == self.probe.channel:
            self.probe.received()
        else:
            self.broker.deliver(channel, data)

    def confirmed(self, command: str, channel: str) -> None:
        self.sent.discard(channel)
        if command in ("SSUBSCRIBE", "SUBSCRIBE"):
            self.subscribed.add(channel)
            self.broker.confirmed(channel)
        else:
            self.subscribed.discard(channel)
        if self.desired(channel) != (channel in self.subscribed):
            self.changed.add(channel)  # wanted again, or no longer, while the command was on its way
            self.broker.wake()

    def refused(self, command: str, channel: str, error: str) -> None:
        self.sent.discard(channel)
        self.refused_.add(channel)
        if error.startswith(("MOVED", "ASK")):
            self.broker.cluster.stale()  # the slot left this master: the map will say where it went
        else:
            logger.warning("redis %s %s at %s:%d refused: %s", command, channel, *self.address, error)

    def dropped(self, channel: str) -> None:
        self.subscribed.discard(channel)
        self.refused_.add(channel)
        self.broker.cluster.stale()

    def lost(self, reason: str) -> None:
        self.subscriber = None
        self.subscribed.clear()
        self.sent.clear()
        self.probe.reset()
        if self.broker.closed:
            return
        self.lost_before = True
        self.failures += 1
        self.retry_at = time.monotonic()  # the first attempt at once: a restart is quick
        if self.failures == 1:
            logger.warning("redis pub/sub connection to %s:%d lost (%s); reconnecting", *self.address, reason)
        self.broker.cluster.stale()
        self.broker.wake()

    def silenced(self) -> None:
        if self.subscriber is not None:
            self.subscriber.close("no probe came back")

    # -- keeping the subscriptions in line -----------------------------------------------------

    def desired(self, channel: str) -> bool:
        return channel in self.wanted or (channel == self.probe.channel and bool(self.wanted))

    def want(self, channel: str, wanted: bool) -> None:
        had = bool(self.wanted)
        if wanted:
            self.wanted.add(channel)
        else:
            self.wanted.discard(channel)
        self.changed.add(channel)
        if had != bool(self.wanted):
            self.changed.add(self.probe.channel)

    def retry_refused(self) -> None:
        self.changed |= self.refused_
        self.refused_.clear()

    def sync(self) -> None:
        """Send what makes the connection's subscriptions match the channels changed; connect first if needed."""
        if not self.up:
            if self.wanted and not self.connecting and time.monotonic() >= self.retry_at:
                self.connecting = True
                self.broker.spawn(self.connect())
            return
        changed, self.changed = self.changed, set()
        added, removed = [], []
        for channel in sorted(changed - self.sent):
            if self.desired(channel) and channel not in self.subscribed:
                added.append(channel)
            elif not self.desired(channel) and channel in self.subscribed:
                removed.append(channel)
        for channels, command in ((added, "SUBSCRIBE"), (removed, "UNSUBSCRIBE")):
            if channels:
                self.sent.update(channels)
                # The notices are classic pub/sub (a cluster carries them to every node); the rest is sharded.
                self.subscriber.send(command, [channel for channel in channels if channel == NOTICES_CHANNEL])
                self.subscriber.send("S" + command, [channel for channel in channels if channel != NOTICES_CHANNEL])

    async def connect(self) -> None:
        try:
            subscriber = await Subscriber.open(self, Endpoint.at(*self.address), timeout=CONNECT_TIMEOUT_S)
        except (*STORAGE_ERRORS, TimeoutError) as exc:
            self.failures += 1
            self.retry_at = time.monotonic() + backoff_seconds(self.failures)
            if self.failures == 1:
                logger.warning("redis pub/sub cannot reach %s:%d (%s); retrying", *self.address, describe(exc))
            self.broker.cluster.stale()
            return
        finally:
            self.connecting = False
            self.broker.wake()
        if self.broker.closed or not self.wanted:
            subscriber.close("not needed")
            return
        self.subscriber = subscriber
        self.changed |= self.wanted | {self.probe.channel}
        self.refused_.clear()
        if self.lost_before:
            logger.info("redis pub/sub reconnected to %s:%d after %d failed attempts", *self.address, self.failures)
            self.broker.reconnected()
        self.failures = 0
        self.lost_before = False
        self.probe.start()

    async def close(self) -> None:
        await self.probe.close()
        if self.subscriber is not None:
            self.subscriber.close("closing")
        self.subscriber = None


class ShardedBroker:
    """The :class:`~fastim.domain.ports.Broker` of a node on a Redis Cluster; see the module's docstring."""

    def __init__(
        self,
        cluster: ClusterCommands,
        *,
        layout: Layout = CLUSTER,
        probe_interval_s: float = PROBE_INTERVAL_S,
        probe_timeout_s: float = PROBE_TIMEOUT_S,
        subscribe_wait_s: float = SUBSCRIBE_WAIT_S,
    ) -> None:
        self.cluster = cluster
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s
        self._keys = layout
        self._subscribe_wait_s = subscribe_wait_s
        self._node = uuid.uuid4().hex[:16]
        self._listeners: dict[str, list[EventListener]] = {}
        self._notice_listeners: list[NoticeListener] = []
        self._resume_listeners: list[ResumeListener] = []
        self._shards: dict[Address, _Shard] = {}
        self._placed: dict[str, Address] = {}  # wanted channel -> the shard it is wanted from
        self._dirty: set[str] = set()  # channels whose listeners or slot owner may have changed
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._to_resume: set[str] = set()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.spawn = Spawned()  # what the shards start (connections) and async listeners
        self._reconnects = 0
        self.closed = False
        cluster.on_map_change(self._map_changed)

    # -- the Broker port ---------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return all(shard.up and shard.probe.healthy for shard in self._shards.values() if shard.wanted)

    @property
    def reconnects(self) -> int:
        return self._reconnects

    @property
    def subscribed_groups(self) -> frozenset[str]:
        """The groups with listeners whose channel Redis confirmed."""
        groups = (self._keys.group_of_channel(c) for shard in self._shards.values() for c in shard.subscribed)
        return frozenset(group for group in groups if group in self._listeners)

    def on_resume(self, listener: ResumeListener) -> None:
        self._resume_listeners.append(listener)

    async def publish(self, event: Event) -> None:
        channel = self._keys.channel(event.group_id)
        with storage_errors(f"publish to {channel}"):
            await self.cluster.execute("SPUBLISH", channel, encode_event(event))

    async def subscribe(self, group_id: str, listener: EventListener) -> None:
        await self.subscribe_many((group_id,), listener)

    async def unsubscribe(self, group_id: str, listener: EventListener) -> None:
        await self.unsubscribe_many((group_id,), listener)

    async def subscribe_many(self, group_ids: Iterable[str], listener: EventListener) -> None:
        """Register ``listener``; wait (a bounded time) until Redis confirms the new subscriptions."""
        if self.closed:
            raise RuntimeError("the broker is closed")
        channels = []
        for group_id in group_ids:
            listeners = self._listeners.setdefault(group_id, [])
            listeners.append(listener)
            if len(listeners) == 1:
                channels.append(self._keys.channel(group_id))
        await self._want(channels)

    async def unsubscribe_many(self, group_ids: Iterable[str], listener: EventListener) -> None:
        for group_id in group_ids:
            listeners = self._listeners.get(group_id)
            if listeners is None or listener not in listeners:
                continue
            listeners.remove(listener)
            if not listeners:
                del self._listeners[group_id]
                self._dirty.add(self._keys.channel(group_id))
        self.wake()

    async def notify(self, notice: Notice) -> None:
        with storage_errors(f"publish to {NOTICES_CHANNEL}"):
            await self.cluster.execute("PUBLISH", NOTICES_CHANNEL, encode_notice(notice))

    async def watch_notices(self, listener: NoticeListener) -> None:
        if self.closed:
            raise RuntimeError("the broker is closed")
        self._notice_listeners.append(listener)
        await self._want([NOTICES_CHANNEL] if len(self._notice_listeners) == 1 else [])

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        for shard in list(self._shards.values()):
            await shard.close()
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.cancel()
        self.spawn.cancel()

    # -- what the shards call ------------------------------------------------------------------

    def wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def reconnected(self) -> None:
        self._reconnects += 1

    def probe_channel(self, address: Address) -> str:
        """A sharded channel of this node whose slot ``address`` serves (about 16384 / its slots tries)."""
        if address not in self.cluster.masters():
            return f"{PROBE_PREFIX}{self._node}"  # a master no longer: nothing to probe (and no search)
        for attempt in range(1 << 16):
            channel = f"{PROBE_PREFIX}{self._node}:{{{attempt}}}"
            if self.cluster.owner(slot_of(channel)) == address:
                return channel
        return f"{PROBE_PREFIX}{self._node}"  # the master owns no slot: nothing to probe

    def confirmed(self, channel: str) -> None:
        """A subscription took effect: wake its subscriber, or (none waits) let the group catch up."""
        waiting = [waiter for waiter in self._waiters.pop(channel, ()) if not waiter.done()]
        for waiter in waiting:
            waiter.set_result(None)
        group_id = self._keys.group_of_channel(channel)
        if not waiting and group_id is not None and group_id in self._listeners:
            if not self._to_resume:
                asyncio.get_running_loop().call_soon(self._resume)
            self._to_resume.add(group_id)

    def deliver(self, channel: str, data: str) -> None:
        if channel == NOTICES_CHANNEL:
            notice = payloads.notice(data)
            if notice is not None:
                call_each_now(self._notice_listeners, notice, failure="a notice listener failed", spawn=self.spawn)
            return
        group_id = self._keys.group_of_channel(channel)
        event = None if group_id is None else payloads.group_event(channel, group_id, data)
        if event is None:
            return
        listeners = self._listeners.get(group_id, ())
        call_each_now(listeners, group_id, event, failure="a listener of group %s failed",
                      failure_args=(group_id,), spawn=self.spawn)

    # -- the subscriptions --------------------------------------------------------------------

    async def _want(self, channels: list[str]) -> None:
        self._start()
        loop = asyncio.get_running_loop()
        waiters = []
        for channel in channels:
            waiter = loop.create_future()
            self._waiters.setdefault(channel, []).append(waiter)
            waiters.append(waiter)
            self._dirty.add(channel)
        self.wake()
        if not waiters:
            return
        done, pending = await asyncio.wait(waiters, timeout=self._subscribe_wait_s)
        for waiter in pending:  # not confirmed in time: the confirmation, when it comes, resumes the group
            waiter.cancel()
        if pending:
            logger.warning("redis did not confirm %d of %d subscriptions within %g s; they follow when it does",
                           len(pending), len(waiters), self._subscribe_wait_s)

    def _start(self) -> None:
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="fastim-sharded-broker")

    def _wants(self, channel: str) -> bool:
        if channel == NOTICES_CHANNEL:
            return bool(self._notice_listeners)
        group_id = self._keys.group_of_channel(channel)
        return group_id is not None and group_id in self._listeners

    def _map_changed(self) -> None:
        self._dirty.update(self._placed)
        for shard in self._shards.values():
            channel = self.probe_channel(shard.address)
            if channel != shard.probe.channel:
                shard.changed.update((shard.probe.channel, channel))
                shard.probe.channel = channel
                shard.probe.reset()
        self.wake()

    def _resume(self) -> None:
        groups, self._to_resume = frozenset(self._to_resume), set()
        if groups:
            call_each_now(self._resume_listeners, groups, failure="a resume listener failed", spawn=self.spawn)

    async def _run(self) -> None:
        assert self._wakeup is not None
        while not self.closed:
            self._wakeup.clear()
            try:
                await self._reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("keeping the sharded subscriptions failed; trying again")
            try:
                async with asyncio.timeout(self._next_look()):
                    await self._wakeup.wait()
            except TimeoutError:  # a poll: what Redis refused is tried again
                for shard in self._shards.values():
                    shard.retry_refused()

    def _next_look(self) -> float:
        now = time.monotonic()
        retries = [shard.retry_at - now for shard in self._shards.values() if shard.wanted and not shard.up]
        return max(0.01, min([POLL_S, *retries]))

    async def _reconcile(self) -> None:
        if self._dirty and not self.cluster.masters():
            try:
                await self.cluster.refresh()
            except STORAGE_ERRORS as exc:
                logger.debug("no slot map yet: %s", describe(exc))
                return
        dirty, self._dirty = self._dirty, set()
        for channel in dirty:
            before = self._placed.get(channel)
            after = self.cluster.owner(slot_of(channel)) if self._wants(channel) else None
            if before == after:
                continue
            if before is not None:
                self._shards[before].want(channel, False)
                del self._placed[channel]
            if after is not None:
                self._shard(after).want(channel, True)
                self._placed[channel] = after
        for address, shard in list(self._shards.items()):
            if not shard.wanted and not shard.subscribed and not shard.sent:
                del self._shards[address]  # nothing wanted from this master any more
                await shard.close()
            else:
                shard.sync()

    def _shard(self, address: Address) -> _Shard:
        shard = self._shards.get(address)
        if shard is None:
            shard = self._shards[address] = _Shard(self, address)
        return shard
