"""The Presence service: this node's sockets by group and user, kept in storage by coalesced flushes under a lease."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from fastim.domain.errors import StorageUnavailable
from fastim.domain.model import PRESENCE_LISTED_MAX, OnlineUser, PresenceChanged
from fastim.domain.ports import PresenceRepository

logger = logging.getLogger(__name__)

# A node's entries in a group live this long after its last write or renewal there: a node killed
# with SIGKILL drops out within it (the issue asks for 30 s).
LEASE_S = 20.0
# Four renewals per lease: a lost or late renewal never lets a live node's entries lapse, and a
# killed node's users are announced gone by the next renewal of another node in the group, within
# LEASE_S + RENEW_S = 25 s of its last write.
RENEW_S = 5.0
# Changes gather this long before they are written: a page reload (leave, then join) cancels out,
# and a reconnect storm costs one write, and at most one event, per group per flush.
FLUSH_S = 0.25
# A write that storage refused is tried again after these many seconds; the last one repeats.
RETRY_S = (0.5, 1.0, 2.0, 4.0, 5.0)
# Groups per storage call: one write stays bounded however many groups the node holds.
BATCH_GROUPS = 1000
# How long a graceful stop waits for storage to take the node's entries out; else they lapse.
CLOSE_TIMEOUT_S = 2.0


def announcement(group_id: str, joined: Iterable[str], left: Iterable[str], online: int) -> PresenceChanged | None:
    """The event of one change-set of a group: None when nobody came or went; past
    :data:`PRESENCE_LISTED_MAX` changes, only the number online (for adapters, which all cut alike)."""
    joined, left = tuple(joined), tuple(left)
    if not joined and not left:
        return None
    if len(joined) + len(left) > PRESENCE_LISTED_MAX:
        joined, left = (), ()
    return PresenceChanged(group_id, joined, left, online)


class Presence:
    """Counts this node's chat sockets per group and user, and keeps storage in step.

    :meth:`enter` and :meth:`exit` are synchronous and cost a dict update; the
    changes of :data:`FLUSH_S` are written in one call, where a user whose
    count came back to what storage holds writes nothing. A write that fails
    is kept and tried again (every count is absolute: trying twice is
    harmless), so no leave is lost. While the node has sockets, its leases
    are renewed every :data:`RENEW_S`; a group whose entries lapsed meanwhile
    (storage away, the process paused) is written again in full.
    """

    def __init__(
        self,
        repository: PresenceRepository,
        node_id: str,
        *,
        announce: bool,
        lease_s: float = LEASE_S,
        renew_s: float = RENEW_S,
        flush_s: float = FLUSH_S,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        """``announce``: [im] presence_events. ``on_failure`` is called for every write storage did not take."""
        self._repository = repository
        self._node_id = node_id
        self._announce = announce
        self._lease_s = lease_s
        self._renew_s = renew_s
        self._flush_s = flush_s
        self._on_failure = on_failure
        self._local: dict[str, dict[str, int]] = {}  # group -> user -> this node's open sockets (never 0)
        # group -> user -> the count storage holds for this node (None: unsure), for users changed since the last flush
        self._dirty: dict[str, dict[str, int | None]] = {}
        self._writing: frozenset[str] = frozenset()  # the groups of the flush in flight
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._renew_timer: asyncio.TimerHandle | None = None
        self._renewing: asyncio.Task[None] | None = None
        self._failures = 0  # writes failed in a row: how long the next try waits
        self._closed = False

    # -- this node's sockets ---------------------------------------------------------------------

    def enter(self, group_id: str, user_id: str) -> None:
        """A chat socket of the user is admitted to the group."""
        if self._closed:
            return
        users = self._local.setdefault(group_id, {})
        count = users.get(user_id, 0)
        self._mark(group_id, user_id, count)
        users[user_id] = count + 1
        self._schedule_flush()
        self._schedule_renewal(self._renew_s)

    def exit(self, group_id: str, user_id: str) -> None:
        """A chat socket that entered closed."""
        if self._closed:
            return
        users = self._local.get(group_id)
        count = users.get(user_id, 0) if users else 0
        if count == 0:
            return  # never entered: nothing to undo
        self._mark(group_id, user_id, count)
        if count > 1:
            users[user_id] = count - 1
        else:
            del users[user_id]
            if not users:
                del self._local[group_id]
        self._schedule_flush()

    def _mark(self, group_id: str, user_id: str, before: int) -> None:
        """Remember what storage holds for a changing user: its count at its first change since the last flush."""
        self._dirty.setdefault(group_id, {}).setdefault(user_id, before)

    # -- reading, for everyone -------------------------------------------------------------------

    async def users(self, group_id: str) -> list[OnlineUser]:
        """The users online in the group on every live node, sorted by user id, with their open sockets.

        Raises :class:`StorageUnavailable` when storage does not answer.
        """
        return await self._repository.users(group_id)

    async def counts(self, group_ids: Iterable[str]) -> dict[str, int]:
        """Distinct users online in each group (0: none), in one round trip. Raises :class:`StorageUnavailable`."""
        ids = list(dict.fromkeys(group_ids))
        if not ids:
            return {}
        return await self._repository.counts(ids)

    # -- writing ---------------------------------------------------------------------------------

    def _schedule_flush(self, delay: float | None = None) -> None:
        if self._closed or self._flush_timer is not None or self._flushing is not None:
            return  # a flush is due already, or in flight (it schedules the next one when it ends)
        loop = asyncio.get_running_loop()
        self._flush_timer = loop.call_later(self._flush_s if delay is None else delay, self._start_flush)

    def _start_flush(self) -> None:
        self._flush_timer = None
        self._flushing = asyncio.get_running_loop().create_task(self._flush(), name="fastim-presence-flush")

    async def _flush(self) -> None:
        try:
            await self._write_changes()
        finally:
            self._flushing = None
            self._writing = frozenset()
            if self._dirty:
                self._schedule_flush(self._retry_delay() if self._failures else None)

    async def _write_changes(self) -> None:
        dirty, self._dirty = self._dirty, {}
        changes: dict[str, dict[str, int]] = {}
        for group_id, users in dirty.items():
            local = self._local.get(group_id, {})
            for user_id, stored in users.items():
                count = local.get(user_id, 0)
                if count != stored:  # back to what storage holds (a reload): nothing to write
                    changes.setdefault(group_id, {})[user_id] = count
        groups = list(changes)
        self._writing = frozenset(groups)
        for start in range(0, len(groups), BATCH_GROUPS):
            batch = {group_id: changes[group_id] for group_id in groups[start:start + BATCH_GROUPS]}
            try:
                lapsed = await self._repository.apply(self._node_id, batch, self._lease_s, self._announce)
            except Exception as exc:  # noqa: BLE001 - whatever failed, the changes are kept for the next try
                self._failed("presence changes not written, trying again", exc)
                for group_id in groups[start:]:  # what storage holds now is unknown: write them all again
                    unsure = self._dirty.setdefault(group_id, {})
                    for user_id in changes[group_id]:
                        unsure[user_id] = None
                return
            self._succeeded()
            for group_id in lapsed:
                self._rewrite(group_id, batch[group_id])

    def _rewrite(self, group_id: str, written: Iterable[str] = ()) -> None:
        """The node's entries in the group lapsed: write every user it has there again (but those just written)."""
        skip = set(written)
        users = [user_id for user_id in self._local.get(group_id, {}) if user_id not in skip]
        if users:
            unsure = self._dirty.setdefault(group_id, {})
            for user_id in users:
                unsure[user_id] = None
            self._schedule_flush()

    # -- leases ----------------------------------------------------------------------------------

    def _schedule_renewal(self, delay: float) -> None:
        if self._closed or self._renew_timer is not None or self._renewing is not None:
            return
        self._renew_timer = asyncio.get_running_loop().call_later(delay, self._start_renewal)

    def _start_renewal(self) -> None:
        self._renew_timer = None
        self._renewing = asyncio.get_running_loop().create_task(self._renew(), name="fastim-presence-renew")

    async def _renew(self) -> None:
        delay = self._renew_s
        try:
            groups = list(self._local)
            for start in range(0, len(groups), BATCH_GROUPS):
                batch = groups[start:start + BATCH_GROUPS]
                lapsed = await self._repository.renew(self._node_id, batch, self._lease_s, self._announce)
                for group_id in lapsed:
                    if group_id not in self._writing:  # a first write in flight makes it live
                        self._rewrite(group_id)
            self._succeeded()
        except Exception as exc:  # noqa: BLE001 - the timer must keep running
            self._failed("presence leases not renewed, trying again", exc)
            delay = min(self._retry_delay(), self._renew_s)
        finally:
            self._renewing = None
            if self._local:  # a node without sockets holds no lease: no timer runs
                self._schedule_renewal(delay)

    def _retry_delay(self) -> float:
        return RETRY_S[min(self._failures, len(RETRY_S)) - 1]

    def _failed(self, what: str, exc: Exception) -> None:
        self._failures += 1
        if self._on_failure is not None:
            self._on_failure()
        if not isinstance(exc, StorageUnavailable):
            logger.error("%s", what, exc_info=exc)  # a bug of ours, not an outage
        elif self._failures == 1:  # once per outage; retries are counted by the metric
            logger.warning("%s: %s", what, exc)

    def _succeeded(self) -> None:
        if self._failures:
            logger.info("presence written again after %d failed attempts", self._failures)
        self._failures = 0

    # -- stopping --------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the timers and take this node's entries out of storage at once (best effort: else they lapse)."""
        if self._closed:
            return
        self._closed = True
        for timer in (self._flush_timer, self._renew_timer):
            if timer is not None:
                timer.cancel()
        self._flush_timer = self._renew_timer = None
        groups = set(self._local) | set(self._dirty) | self._writing
        running = [task for task in (self._flushing, self._renewing) if task is not None]
        if running:
            _, late = await asyncio.wait(running, timeout=CLOSE_TIMEOUT_S)
            for task in late:
                task.cancel()
        self._local.clear()
        self._dirty.clear()
        if not groups:
            return
        ordered = sorted(groups)
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                for start in range(0, len(ordered), BATCH_GROUPS):
                    await self._repository.drop(self._node_id, ordered[start:start + BATCH_GROUPS], self._announce)
        except (StorageUnavailable, TimeoutError) as exc:
            logger.warning("presence of this node not removed (it lapses within %g s): %s", self._lease_s,
                           exc or "timed out")
        except Exception:  # a stop goes on: what follows closes the broker and the storage
            logger.exception("presence of this node not removed (it lapses within %g s)", self._lease_s)
