"""``/group/chat/{groupId}/{userId}/{token}``: one chat room socket."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastim.domain.errors import NotAMember, StorageUnavailable
from fastim.domain.groups import Groups
from fastim.domain.messages import Messages
from fastim.domain.model import Event, Message
from fastim.interfaces.ws import frames
from fastim.interfaces.ws.base import Socket, SocketContext
from fastim.interfaces.ws.hub import Batch, Hub
from fastim.interfaces.ws.limits import TokenBucket

logger = logging.getLogger(__name__)

MAX_EARLY_EVENTS = 1000  # events held while the snapshot is read; a room this busy loses nothing in 1000


@dataclass(frozen=True)
class ChatLimits:
    max_message_bytes: int
    rate_limit: float
    rate_burst: int


class ChatSocket(Socket):
    """Sends the newest messages on open, then every event of the group; each text frame is a message."""

    kind = "chat"

    def initialize(
        self, context: SocketContext, hub: Hub, messages: Messages, groups: Groups, limits: ChatLimits
    ) -> None:
        super().initialize(context)
        self.hub = hub
        self.messages = messages
        self.groups = groups
        self.limits = limits
        self.group_id: str | None = None
        self.user_id: str | None = None
        self.joined = False
        # Until the snapshot is sent, events wait here so the client sees history first.
        self.early: list[tuple[Event, bytes]] | None = []
        self.bucket = TokenBucket(limits.rate_limit, limits.rate_burst)

    async def open(self, group_id: str, user_id: str, token: str) -> None:
        self.register()
        if not self.valid_ids(groupId=group_id, userId=user_id):
            return
        self.group_id, self.user_id = group_id, user_id
        try:
            if not await self.admitted(user_id, token):
                return
            await self.groups.enter(user_id, group_id)
            if self.closed:
                return  # the client left while we checked
            self.joined = True  # before the await: join() registers us at once, on_close must undo it
            await self.hub.join(group_id, self)
            page = await self.messages.latest(group_id)
        except NotAMember:
            self.close(frames.CLOSE_NOT_A_MEMBER, "not a member of this group")
            return
        except StorageUnavailable:
            self.unavailable_at_open()
            return
        self.send(frames.chat_snapshot(page))
        self.release_early(page.messages)
        self.hub.go_live(group_id, self)

    def release_early(self, snapshot: list[Message]) -> None:
        """Send the events that arrived while the snapshot was read, minus those it already holds."""
        early, self.early = self.early or [], None
        already = set(snapshot)
        frames = b"".join(frame for event, frame in early if event not in already)
        if frames:
            self.write_frames(frames)

    def deliver(self, group_id: str, batch: Batch) -> None:
        """Before the snapshot went out; after it the Hub writes the frames itself (go_live)."""
        if self.early is None:
            self.write_frames(batch.data)
        elif len(self.early) + len(batch.events) <= MAX_EARLY_EVENTS:
            self.early.extend(zip(batch.events, batch.frames))
        else:
            # The snapshot read is stuck (Redis slow or away) while the room is flooding: rather
            # than hold an unbounded backlog, tell the client to reconnect and get a fresh snapshot.
            logger.warning("group %s: over %d events while the snapshot was read; closing", group_id, MAX_EARLY_EVENTS)
            self.early = []
            self.close(frames.CLOSE_TRY_AGAIN_LATER, "too many messages while opening; reconnect")

    async def on_message(self, text: str | bytes) -> None:
        if isinstance(text, bytes):
            self.refuse("binary", frames.ERROR_BINARY, "binary frames are not accepted; send text")
            return
        if not text:
            self.refuse("empty", frames.ERROR_EMPTY, "empty message")
            return
        size = len(text.encode("utf-8"))
        if size > self.limits.max_message_bytes:
            limit = self.limits.max_message_bytes
            self.refuse("too_large", frames.ERROR_TOO_LARGE, f"message of {size} bytes is over the limit of {limit}")
            return
        if not self.bucket.take():
            rate = self.limits.rate_limit
            self.refuse("too_fast", frames.ERROR_TOO_FAST, f"more than {rate:g} messages a second; slow down")
            return
        try:
            await self.messages.post(self.group_id, self.user_id, text)
        except StorageUnavailable:
            self.metrics.storage_errors.inc()
            self.refuse("unavailable", frames.ERROR_UNAVAILABLE, "storage unavailable; the message was not sent")
            return
        self.metrics.messages_received.inc()

    def refuse(self, reason: str, code: int, msg: str) -> None:
        """Answer a refused frame with an error frame; the socket stays open."""
        self.metrics.rejected_frames.labels(reason).inc()
        self.send(frames.error_frame(code, msg))

    def on_close(self) -> None:
        super().on_close()
        if self.joined:
            self.joined = False
            self.hub.leave(self.group_id, self)
