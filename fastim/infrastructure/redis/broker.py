"""The Redis broker: PUBLISH on ``mq:{groupId}``, and one pub/sub connection per node fanning events out.

The pub/sub connection is a :class:`~fastim.infrastructure.redis.subscriber.Subscriber`:
each read of the socket is parsed by hiredis at once and every message in it
reaches the listeners right there, in the order Redis pushed them. Reading
one message at a time through redis-py's ``PubSub`` cost a timeout, a retry
wrapper and a task switch per message: about a fifth of a busy node's CPU.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from fastim.domain.codec import encode_event, encode_notice
from fastim.domain.model import Event, Notice
from fastim.domain.ports import EventListener, NoticeListener, ResumeListener
from fastim.infrastructure.listeners import Spawned, call_each_now
from fastim.infrastructure.redis import payloads
from fastim.infrastructure.redis.backoff import BACKOFF_CAP_SECONDS, BACKOFF_INITIAL_SECONDS, backoff_seconds
from fastim.infrastructure.redis.batcher import Commands
from fastim.infrastructure.redis.client import STORAGE_ERRORS, describe, storage_errors
from fastim.infrastructure.redis.endpoint import Endpoint
from fastim.infrastructure.redis.keys import NOTICES_CHANNEL, STANDALONE
from fastim.infrastructure.redis.pipeline import CONNECT_TIMEOUT_SECONDS, REPLY_TIMEOUT_SECONDS
from fastim.infrastructure.redis.probe import PROBE_INTERVAL_S, PROBE_TIMEOUT_S, Probe
from fastim.infrastructure.redis.subscriber import Subscriber

logger = logging.getLogger(__name__)

# A subscribe waits this long for Redis to confirm before the caller goes on (as on a cluster):
# confirmed, events published from then on are delivered; later, the resume listeners read what
# came meanwhile.
SUBSCRIBE_WAIT_S = 2.0
# Without news, the connection is looked at again this often (a (un)subscribe left unanswered).
POLL_S = 1.0


class RedisBroker:
    """Publishes through the node's commands; receives on one pub/sub connection of its own.

    The connection subscribes to ``mq:{g}`` only while ``g`` has listeners on
    this node, and to the notices channel once someone watches notices. Each
    payload is decoded once and every listener of the group called with it,
    synchronously (an async listener's coroutine is started, in order). The
    broker survives a bad payload, a failing listener and the loss of Redis:
    it reconnects with capped exponential backoff (one warning per outage),
    subscribes again to every channel that still has listeners and, once Redis
    confirmed them all, hands the groups to the resume listeners. Subscription
    changes cost O(changed groups): only channels marked dirty are looked at.
    A :class:`Probe` checks the path end to end and has a silent connection
    replaced; a (un)subscribe left unanswered for ``reply_timeout_s`` has it
    replaced too.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        commands: Commands,
        *,
        subscribe_wait_s: float = SUBSCRIBE_WAIT_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_SECONDS,
        reply_timeout_s: float = REPLY_TIMEOUT_SECONDS,
        poll_s: float = POLL_S,
        backoff_initial_seconds: float = BACKOFF_INITIAL_SECONDS,
        backoff_cap_seconds: float = BACKOFF_CAP_SECONDS,
        probe_interval_s: float = PROBE_INTERVAL_S,
        probe_timeout_s: float = PROBE_TIMEOUT_S,
    ) -> None:
        self._endpoint = endpoint
        self._commands = commands
        self._subscribe_wait_s = subscribe_wait_s
        self._connect_timeout_s = connect_timeout_s
        self._reply_timeout_s = reply_timeout_s
        self._poll_s = poll_s
        self._backoff_initial = backoff_initial_seconds
        self._backoff_cap = backoff_cap_seconds
        self._listeners: dict[str, list[EventListener]] = {}
        self._notice_listeners: list[NoticeListener] = []
        self._resume_listeners: list[ResumeListener] = []
        self._subscriber: Subscriber | None = None
        self._subscribed: set[str] = set()  # channels Redis confirmed on the current connection
        self._sent: set[str] = set()  # channels whose (un)subscribe awaits its answer
        self._dirty: set[str] = set()  # channels whose listeners changed since the connection last looked
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}  # callers awaiting a channel's confirmation
        self._to_resume: set[str] = set()  # groups confirmed late, with nobody waiting: they catch up
        self._spawn = Spawned()  # async listeners running
        self._wakeup = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None
        self._down = False  # the connection was lost (or never made): events may have been missed
        self._resubscribing = False  # reconnected: the resume listeners wait for the last confirmation
        self._failures = 0  # failed connections in a row
        self._retry_at = 0.0
        self._reconnects = 0
        self._closed = False
        self._probe = Probe(
            publish=lambda channel, payload: self._commands.execute("PUBLISH", channel, payload),
            active=lambda: self._subscriber is not None and self._probe.channel in self._subscribed,
            on_silence=self._silenced,
            interval_s=probe_interval_s,
            timeout_s=probe_timeout_s,
        )

    # -- the Broker port -----------------------------------------------------------------------

    @property
    def subscribed_groups(self) -> frozenset[str]:
        """The groups with listeners whose channel Redis confirmed on the current connection."""
        groups = map(STANDALONE.group_of_channel, self._subscribed)
        return frozenset(group for group in groups if group in self._listeners)

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
            await self._commands.execute("PUBLISH", channel, encode_event(event))

    async def subscribe(self, group_id: str, listener: EventListener) -> None:
        await self.subscribe_many((group_id,), listener)

    async def unsubscribe(self, group_id: str, listener: EventListener) -> None:
        await self.unsubscribe_many((group_id,), listener)

    async def subscribe_many(self, group_ids: Iterable[str], listener: EventListener) -> None:
        """Register ``listener`` on each group; wait (a bounded time) until Redis confirms the new channels.

        Registering first means a failed SUBSCRIBE loses nothing: the channel is
        subscribed once Redis answers again, and its group handed to the resume
        listeners. While the connection is down, nobody waits.
        """
        if self._closed:
            raise RuntimeError("the broker is closed")
        channels = []
        for group_id in group_ids:
            self._listeners.setdefault(group_id, []).append(listener)
            channel = STANDALONE.channel(group_id)
            if channel not in self._subscribed or channel in self._sent:
                channels.append(channel)
        await self._want(channels)

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
            self._sync()

    async def notify(self, notice: Notice) -> None:
        with storage_errors(f"publish to {NOTICES_CHANNEL}"):
            await self._commands.execute("PUBLISH", NOTICES_CHANNEL, encode_notice(notice))

    async def watch_notices(self, listener: NoticeListener) -> None:
        if self._closed:
            raise RuntimeError("the broker is closed")
        self._notice_listeners.append(listener)
        pending = NOTICES_CHANNEL not in self._subscribed or NOTICES_CHANNEL in self._sent
        await self._want([NOTICES_CHANNEL] if pending else [])

    async def close(self) -> None:
        """Stop the keeper and close the pub/sub connection; the commands stay open. Idempotent."""
        if self._closed:
            return
        self._closed = True
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            # wait() neither re-raises the keeper's cancellation nor swallows ours.
            await asyncio.wait([keeper])
        await self._probe.close()
        subscriber, self._subscriber = self._subscriber, None
        if subscriber is not None:
            subscriber.close("closing")
        self._release_waiters()
        self._spawn.cancel()

    # -- what the subscriber reports (SubscriberEvents) ------------------------------------------

    def message(self, channel: str, data: str) -> None:
        group_id = STANDALONE.group_of_channel(channel)
        if group_id is not None:
            event = payloads.group_event(channel, group_id, data)
            if event is not None:
                call_each_now(self._listeners.get(group_id, ()), group_id, event,
                              failure="a listener of group %s failed", failure_args=(group_id,), spawn=self._spawn)
        elif channel == self._probe.channel:
            self._probe.received()
        elif channel == NOTICES_CHANNEL:
            notice = payloads.notice(data)
            if notice is not None:
                call_each_now(self._notice_listeners, notice, failure="a notice listener failed", spawn=self._spawn)

    def confirmed(self, command: str, channel: str) -> None:
        self._sent.discard(channel)
        if command == "SUBSCRIBE":
            self._subscribed.add(channel)
            self._took_effect(channel)
        else:
            self._subscribed.discard(channel)
        if self._wants(channel) != (channel in self._subscribed):
            self._dirty.add(channel)  # wanted again, or no longer, while the command was on its way
            self._wakeup.set()
        if self._resubscribing and not self._sent:
            self._resubscribed()

    def refused(self, command: str, channel: str, error: str) -> None:
        # A standalone Redis refuses a SUBSCRIBE only when something is wrong with the connection
        # (an ACL, a server in a strange state): start again on a new one, with backoff.
        if self._subscriber is not None:
            self._subscriber.close(f"redis refused {command} {channel}: {error}")

    def dropped(self, channel: str) -> None:
        # Only a cluster unsubscribes by itself; should a server do it, the channel is subscribed again.
        self._subscribed.discard(channel)
        self._dirty.add(channel)
        self._wakeup.set()

    def lost(self, reason: str) -> None:
        subscriber = self._subscriber
        if subscriber is None or subscriber.is_open:
            return  # a connection still being opened failed: its opener hears of it
        self._subscriber = None
        self._subscribed = set()
        self._sent = set()
        self._probe.reset()
        if not self._closed:
            self._failed(reason)

    # -- keeping the connection -------------------------------------------------------------------

    async def _want(self, channels: list[str]) -> None:
        self._start()
        self._dirty.update(channels)
        self._dirty.add(self._probe.channel)
        waiters = [] if self._down else [self._waiter(channel) for channel in channels]
        self._sync()
        if not waiters:
            return
        try:
            _, pending = await asyncio.wait(waiters, timeout=self._subscribe_wait_s)
        finally:
            for waiter in waiters:  # not confirmed in time: the confirmation, when it comes, resumes the group
                waiter.cancel()
        if pending:
            logger.warning("redis did not confirm %d of %d subscriptions within %g s; they follow when it does",
                           len(pending), len(waiters), self._subscribe_wait_s)

    def _waiter(self, channel: str) -> asyncio.Future[None]:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(waiter)
        return waiter

    def _release_waiters(self) -> None:
        """Nobody waits for a connection that may take a while: the resume listeners catch up instead."""
        waiters, self._waiters = self._waiters, {}
        for waiting in waiters.values():
            for waiter in waiting:
                if not waiter.done():
                    waiter.set_result(None)

    def _start(self) -> None:
        if self._keeper is None:
            self._keeper = asyncio.get_running_loop().create_task(self._keep(), name="fastim-redis-broker")
            self._probe.start()

    def _wanted(self) -> bool:
        return bool(self._listeners or self._notice_listeners)

    def _wants(self, channel: str) -> bool:
        if channel == NOTICES_CHANNEL:
            return bool(self._notice_listeners)
        if channel == self._probe.channel:
            return self._wanted()
        group_id = STANDALONE.group_of_channel(channel)
        return group_id is not None and group_id in self._listeners

    def _sync(self) -> None:
        """Send what makes the connection's subscriptions match the listeners, for the channels marked dirty."""
        subscriber = self._subscriber
        if subscriber is None:
            self._wakeup.set()  # the keeper connects, and then looks at every channel
            return
        dirty, self._dirty = self._dirty, set()
        added, removed = [], []
        for channel in dirty:
            if channel in self._sent:
                continue  # looked at again when its answer comes
            wanted, subscribed = self._wants(channel), channel in self._subscribed
            if wanted and not subscribed:
                added.append(channel)
            elif subscribed and not wanted:
                removed.append(channel)
        self._sent.update(added)
        self._sent.update(removed)
        subscriber.send("SUBSCRIBE", added, together=True)  # 20,000 groups of a list: one command
        subscriber.send("UNSUBSCRIBE", removed, together=True)

    async def _keep(self) -> None:
        """Open a connection while listeners want one (after the backoff); give up one that stopped answering."""
        while not self._closed:
            self._wakeup.clear()
            try:
                if self._subscriber is None:
                    if self._wanted() and time.monotonic() >= self._retry_at:
                        await self._connect()
                elif self._subscriber.stalled(self._reply_timeout_s):
                    self._subscriber.close(f"redis answered no (un)subscribe for {self._reply_timeout_s:g} s")
                else:
                    self._sync()
            except Exception as exc:  # a bug: start again on a new connection, after the backoff
                logger.exception("keeping the redis pub/sub connection failed; reconnecting")
                if self._subscriber is not None:
                    self._subscriber.close(describe(exc))
                else:
                    self._failed(describe(exc))
            try:
                async with asyncio.timeout(self._next_look()):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    def _next_look(self) -> float:
        if self._subscriber is None and self._wanted():
            return max(0.01, min(self._poll_s, self._retry_at - time.monotonic()))
        return self._poll_s

    async def _connect(self) -> None:
        try:
            subscriber = await Subscriber.open(self, self._endpoint, self._connect_timeout_s)
        except Exception as exc:
            if not isinstance(exc, STORAGE_ERRORS):
                logger.exception("opening the redis pub/sub connection failed")
            self._failed(describe(exc))
            return
        if self._closed:
            subscriber.close("closing")
            return
        if not subscriber.is_open:  # lost before it was ours: its report went unheard
            self._failed(subscriber.lost_because)
            return
        self._subscriber = subscriber
        self._resubscribing = self._down
        self._dirty = {STANDALONE.channel(group_id) for group_id in self._listeners}
        self._dirty.update((NOTICES_CHANNEL, self._probe.channel))
        self._sync()
        if self._resubscribing and not self._sent:
            self._resubscribed()

    def _failed(self, reason: str) -> None:
        self._down = True
        self._resubscribing = False
        self._failures += 1
        if self._failures == 1:
            logger.warning("redis pub/sub connection lost (%s); reconnecting", reason)
        else:  # one warning per outage, not one per attempt
            logger.debug("redis pub/sub reconnect attempt %d failed: %s", self._failures, reason)
        self._retry_at = time.monotonic() + backoff_seconds(self._failures, self._backoff_initial, self._backoff_cap)
        self._release_waiters()
        self._wakeup.set()

    def _silenced(self) -> None:
        """The probe says the connection stopped delivering: replace it."""
        if self._subscriber is not None:
            self._subscriber.close("no probe came back")

    # -- catching up ---------------------------------------------------------------------------

    def _took_effect(self, channel: str) -> None:
        """A SUBSCRIBE was confirmed: wake its callers or, when none waits, let the group catch up."""
        waiting = [waiter for waiter in self._waiters.pop(channel, ()) if not waiter.done()]
        for waiter in waiting:
            waiter.set_result(None)
        if waiting or self._resubscribing:
            return
        group_id = STANDALONE.group_of_channel(channel)
        if group_id is not None and group_id in self._listeners:
            if not self._to_resume:
                asyncio.get_running_loop().call_soon(self._resume_late)
            self._to_resume.add(group_id)

    def _resume_late(self) -> None:
        groups, self._to_resume = frozenset(self._to_resume), set()
        if groups and not self._closed:
            call_each_now(self._resume_listeners, groups, failure="a resume listener failed", spawn=self._spawn)

    def _resubscribed(self) -> None:
        """Every channel is subscribed again after a loss: the resume listeners read what was missed."""
        self._resubscribing = False
        groups = self.subscribed_groups
        logger.info("redis pub/sub reconnected after %d failed attempts; %d groups subscribed",
                    self._failures, len(groups))
        self._down = False
        self._failures = 0
        self._reconnects += 1
        call_each_now(self._resume_listeners, groups, failure="a resume listener failed", spawn=self._spawn)

