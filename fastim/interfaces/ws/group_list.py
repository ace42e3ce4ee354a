"""``/group/list/{userId}/{token}``: the user's groups, pushed again whenever one of them changes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from fastim.domain.errors import StorageUnavailable
from fastim.domain.groups import Groups
from fastim.domain.model import GroupSummary
from fastim.domain.presence import Presence
from fastim.interfaces.ws import frames
from fastim.interfaces.ws.base import Socket, SocketContext
from fastim.interfaces.ws.hub import Batch, Hub
from fastim.interfaces.ws.transport import Transport

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ListServices:
    """What every group-list socket of the node uses, built once."""

    hub: Hub
    groups: Groups
    refresher: MembershipRefresher
    update_rate: float  # [im] group_list_update_rate: the most often one socket is pushed, in seconds
    presence: Presence | None = None  # None: the entries carry no "online"


class GroupListSocket(Socket):
    """A member of the Hub in each of the user's groups: events mark it stale, pushes are coalesced.

    No timer runs while nothing changes. The first change after a quiet spell
    is pushed at once; changes that follow within ``update_rate`` seconds are
    folded into one push at the end of that interval.
    """

    __slots__ = ("lists", "user_id", "watched", "last_push", "timer", "pushing")
    kind = "list"

    def __init__(self, context: SocketContext, lists: ListServices, transport: Transport) -> None:
        self.lists = lists
        self.user_id: str | None = None
        self.watched: set[str] = set()
        self.last_push = float("-inf")
        self.timer: asyncio.TimerHandle | None = None
        self.pushing = False
        super().__init__(context, transport)

    async def open(self, user_id: str, token: str, *, query: Mapping[str, str] | None = None) -> None:
        if not self.valid_ids(userId=user_id):
            return
        self.user_id = user_id
        try:
            if not await self.admitted(user_id, token):
                return
            self.last_push = asyncio.get_running_loop().time()
            summaries, online = await self.read()
        except StorageUnavailable:
            self.unavailable_at_open()
            return
        if self.closed:
            return
        self.lists.refresher.add(self)
        await self.show(summaries, online)

    def deliver(self, group_id: str, batch: Batch) -> None:
        self.changed()

    def changed(self) -> None:
        """Schedule a push no sooner than ``update_rate`` after the previous one."""
        if self.closed or self.timer is not None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, self.last_push + self.lists.update_rate - loop.time())
        self.timer = loop.call_later(delay, self._push_now)

    def _push_now(self) -> None:
        self.timer = None
        asyncio.get_running_loop().create_task(self.push())

    async def push(self) -> None:
        """Read the summaries of every joined group (one round trip) and send them."""
        if self.closed:
            return
        if self.pushing:  # one read at a time; what changed meanwhile is pushed next
            self.changed()
            return
        self.pushing = True
        self.last_push = asyncio.get_running_loop().time()
        try:
            summaries, online = await self.read()
        except StorageUnavailable as exc:
            self.context.metrics.storage_errors.inc()
            logger.warning("group list of user %s not refreshed: %s", self.user_id, exc)
            self.changed()  # try again after update_rate
            return
        finally:
            self.pushing = False
        await self.show(summaries, online)

    async def read(self) -> tuple[list[GroupSummary], dict[str, int] | None]:
        """The summaries of the user's groups and the users online in each, both read in one turn."""
        groups, presence = self.lists.groups, self.lists.presence
        if presence is None:
            return await groups.summaries(self.user_id), None
        group_ids = await groups.groups_of(self.user_id)
        summaries, online = await asyncio.gather(groups.summaries_of(group_ids), presence.counts(group_ids))
        return summaries, online

    async def show(self, summaries: list[GroupSummary], online: dict[str, int] | None = None) -> None:
        """Watch every group listed (and no other), then send the list: the groups the token grants."""
        await self.watch({summary.group_id for summary in summaries})
        if self.grant is not None and self.grant.groups is not None:  # a JWT's groups claim
            summaries = [summary for summary in summaries if self.grant.allows(summary.group_id)]
        self.send(frames.group_list(summaries, online))

    async def refresh_memberships(self) -> None:
        """Pick up groups joined or left elsewhere (another node, another program) since the last look.

        One O(1) count per look; the groups themselves are read again only when it changed.
        """
        if self.closed:
            return
        if await self.lists.groups.count_of(self.user_id) != len(self.watched):
            self.changed()

    async def watch(self, group_ids: set[str]) -> None:
        """Follow exactly ``group_ids``: the Hub hears only of the groups that changed, in one call each way."""
        if self.closed:
            return
        left = self.watched - group_ids
        if left:
            self.watched -= left
            self.lists.hub.leave_many(left, self)
        joined = group_ids - self.watched
        if joined:
            self.watched |= joined  # before the await, so on_closed can undo it
            await self.lists.hub.join_many(joined, self)

    def on_text(self, text: str) -> None:
        if self.is_refresh(text):
            self.refresh(text)
        else:
            self.refuse_frame()

    def on_binary(self, data: bytes) -> None:
        self.refuse_frame()

    def refuse_frame(self) -> None:
        """This socket only pushes; a frame from the client gets an answer, not silence."""
        self.refuse("not_accepted", frames.ERROR_NOT_ACCEPTED, "the group-list socket takes no messages")

    def on_closed(self) -> None:
        super().on_closed()
        self.lists.refresher.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        watched, self.watched = self.watched, set()
        self.lists.hub.leave_many(watched, self)


MEMBERSHIP_REFRESH_S = 2.0  # "a group joined later shows within a few seconds", at one SCARD per socket per 2 s


class MembershipRefresher:
    """One node-wide timer that lets every open group-list socket look for newly joined groups.

    Joins happen on any node and through programs that announce nothing
    (fast-im's Java nodes), so the memberships are re-read; messages and
    recalls never are, they arrive as events.
    """

    def __init__(self, interval: float = MEMBERSHIP_REFRESH_S) -> None:
        self._interval = interval
        self._sockets: set[GroupListSocket] = set()
        self._task: asyncio.Task[None] | None = None

    def add(self, socket: GroupListSocket) -> None:
        self._sockets.add(socket)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def discard(self, socket: GroupListSocket) -> None:
        self._sockets.discard(socket)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    async def _run(self) -> None:
        while self._sockets:
            await asyncio.sleep(self._interval)
            results = await asyncio.gather(
                *(socket.refresh_memberships() for socket in tuple(self._sockets)), return_exceptions=True
            )
            failures = [r for r in results if isinstance(r, Exception)]
            if failures:
                logger.warning("membership refresh failed for %d sockets: %s", len(failures), failures[0])
