"""``/group/chat/{groupId}/{userId}/{token}``: one chat room socket."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass

from fastim.domain.errors import (
    HookFailed,
    JoinRefused,
    MessageRejected,
    NotAMember,
    NotReplicated,
    OutcomeUnknown,
    StorageUnavailable,
    TooManyGroups,
)
from fastim.domain.groups import Groups
from fastim.domain.messages import Messages
from fastim.domain.model import Event, epoch_of
from fastim.domain.presence import Presence
from fastim.domain.review import Review
from fastim.interfaces.ws import frames
from fastim.interfaces.ws.base import Socket, SocketContext
from fastim.interfaces.ws.hub import Batch, Hub
from fastim.interfaces.ws.limits import TokenBucket
from fastim.interfaces.ws.recovery import Opening, Recovery
from fastim.interfaces.ws.transport import Transport

logger = logging.getLogger(__name__)

MAX_EARLY_EVENTS = 1000  # events held while the snapshot is read; a room this busy loses nothing in 1000
MAX_SEQ = 2**53 - 1
EPOCH_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def parse_resume(query: Mapping[str, str]) -> tuple[int | None, str | None] | None:
    """``since`` and ``epoch`` of a chat URL's query (each may be absent); None when either is malformed."""
    since_text, epoch = query.get("since"), query.get("epoch") or None  # "": a stream not started yet
    since = None
    if since_text is not None:
        if len(since_text) > 16 or not since_text.isascii() or not since_text.isdigit() or int(since_text) > MAX_SEQ:
            return None
        since = int(since_text)
    if epoch is not None and not EPOCH_PATTERN.fullmatch(epoch):
        return None
    return since, epoch


@dataclass(frozen=True)
class ChatLimits:
    max_message_bytes: int
    rate_limit: float
    rate_burst: int


@dataclass(frozen=True)
class ChatServices:
    """What every chat socket of the node uses, built once."""

    hub: Hub
    messages: Messages
    groups: Groups
    limits: ChatLimits
    recovery: Recovery
    review: Review | None = None  # the publish hook's; None without one, and a send pays nothing for it
    presence: Presence | None = None  # None: sockets are not counted online (a node built without it)


class ChatSocket(Socket):
    """Sends the newest messages on open, then every event of the group; each text frame is a message."""

    __slots__ = ("chat", "group_id", "user_id", "joined", "opened", "waiting", "early", "floor", "bucket", "ack",
                 "present")
    kind = "chat"

    def __init__(self, context: SocketContext, chat: ChatServices, transport: Transport) -> None:
        self.chat = chat
        self.group_id: str | None = None
        self.user_id: str | None = None
        self.joined = False
        self.opened = False  # open() is over: frames are taken as messages from now on
        self.waiting: asyncio.Future[None] | None = None  # what frames sent before that wait for
        # Until the snapshot is sent, events wait here so the client sees history first.
        self.early: list[tuple[Event, bytes]] | None = []
        # (epoch, seq) the opening frame covered: events up to it are not sent again.
        self.floor: tuple[str, int] | None = None
        self.bucket = TokenBucket(chat.limits.rate_limit, chat.limits.rate_burst)
        self.ack = False  # ?ack=1: every text frame is answered in order, a stored one with an ack frame
        self.present = False  # counted online in its group (presence.enter); on_closed undoes it
        super().__init__(context, transport)

    async def open(self, group_id: str, user_id: str, token: str, *, query: Mapping[str, str] | None = None) -> None:
        """``query`` may resume: ``since`` (the seq of the last event seen) and ``epoch`` (of its stream)."""
        try:
            await self._open(group_id, user_id, token, query or {})
        finally:
            self.opened = True
            if self.waiting is not None:
                self.waiting.set_result(None)
                self.waiting = None

    async def _open(self, group_id: str, user_id: str, token: str, query: Mapping[str, str]) -> None:
        if not self.valid_ids(groupId=group_id, userId=user_id):
            return
        resume = parse_resume(query)
        if resume is None:
            self.close(frames.CLOSE_BAD_PATH, "since must be a seq (0 or more) and epoch an epoch")
            return
        since, epoch = resume
        self.ack = query.get("ack") == "1"
        self.group_id, self.user_id = group_id, user_id
        hub = self.chat.hub
        try:
            if not await self.admitted(user_id, token):
                return
            if self.grant is not None and not self.grant.allows(group_id):
                self.close(frames.CLOSE_NOT_A_MEMBER, "the token does not grant this group")
                return
            await self.chat.groups.enter(user_id, group_id)
            if self.closed:
                return  # the client left while we checked
            self.joined = True  # before the await: join() registers us at once, on_closed must undo it
            await hub.join(group_id, self)
            self.enter_presence()
            opening = await self.chat.recovery.opening(group_id, since, epoch)
        except NotAMember:
            self.close(frames.CLOSE_NOT_A_MEMBER, "not a member of this group")
            return
        except JoinRefused:
            self.close(frames.CLOSE_NOT_A_MEMBER, "not allowed to join this group")
            return
        except TooManyGroups as exc:
            self.close(frames.CLOSE_NOT_A_MEMBER, str(exc))
            return
        except StorageUnavailable:
            self.unavailable_at_open()
            return
        if self.closed:
            return
        self.send(frames.chat_opening(opening))
        self.floor = (opening.epoch, opening.seq)
        self.release_early(opening)
        last = hub.sequencer.last(group_id)
        if last is not None and self.newer(last[0], last[1]):
            hub.go_live(group_id, self)  # whatever the Hub forwards from now on is newer than the opening
        # else: until an event past the opening comes through, deliver() filters (a channel that lags
        # storage, or a backlog of the node's previous subscription, may still bring older events)

    def newer(self, epoch: str | None, seq: int) -> bool:
        """Whether the stream at (epoch, seq) has reached what the opening frame covered."""
        floor_epoch, floor_seq = self.floor
        return seq >= floor_seq or (epoch is not None and epoch != floor_epoch)

    def wanted(self, event: Event) -> bool:
        """An event the client still needs after its opening frame: past it, or of a restarted stream."""
        if event.seq is None:
            return True  # presence is not in the stream; fast-im's nodes store no seq to compare
        floor_epoch, floor_seq = self.floor
        epoch = epoch_of(event)
        return event.seq > floor_seq or (epoch is not None and epoch != floor_epoch)

    def release_early(self, opening: Opening) -> None:
        """Send the events that arrived while the opening was read, minus those it already holds (by seq)."""
        early, self.early = self.early or [], None
        listed = {event for event in opening.events if event.seq is None}  # fast-im's, without seq
        data = b"".join(frame for event, frame in early if self.wanted(event) and event not in listed)
        if data:
            self.write_frames(data)

    def deliver(self, group_id: str, batch: Batch) -> None:
        """Before the opening went out: held. After it: filtered, until the Hub writes the frames itself (go_live)."""
        if self.early is None:
            data = b"".join(frame for event, frame in zip(batch.events, batch.frames) if self.wanted(event))
            if data:
                self.write_frames(data)
            if any(event.seq is not None and self.newer(epoch_of(event), event.seq) for event in batch.events):
                self.chat.hub.go_live(group_id, self)
        elif len(self.early) + len(batch.events) <= MAX_EARLY_EVENTS:
            self.early.extend(zip(batch.events, batch.frames))
        else:
            # The snapshot read is stuck (Redis slow or away) while the room is flooding: rather
            # than hold an unbounded backlog, tell the client to reconnect and get a fresh snapshot.
            logger.warning("group %s: over %d events while the snapshot was read; closing", group_id, MAX_EARLY_EVENTS)
            self.early = []
            self.close(frames.CLOSE_TRY_AGAIN_LATER, "too many messages while opening; reconnect")

    def on_text(self, text: str) -> Awaitable[None] | None:
        """Check the frame at once; a frame that passes is posted, and the next one waits for it."""
        if not self.opened:
            return self._after_open(text)
        if not self.joined:
            return None  # open() refused the socket, which is closing with the reason
        if not text:
            self.refuse("empty", frames.ERROR_EMPTY, "empty message")
            return None
        limits = self.chat.limits
        if len(text) * 4 > limits.max_message_bytes:  # only long texts pay for counting their bytes
            size = len(text.encode("utf-8"))
            if size > limits.max_message_bytes:
                limit = limits.max_message_bytes
                self.refuse("too_large", frames.ERROR_TOO_LARGE, f"message of {size} bytes is over the limit of {limit}")
                return None
        if not self.bucket.take():
            self.refuse("too_fast", frames.ERROR_TOO_FAST, f"more than {limits.rate_limit:g} messages a second; slow down")
            return None
        if self.grant is not None and self.is_refresh(text):
            self.refresh(text)
            return None
        return self.post(text)

    def granted_group(self) -> str | None:
        return self.group_id

    def on_binary(self, data: bytes) -> None:
        self.refuse("binary", frames.ERROR_BINARY, "binary frames are not accepted; send text")

    async def _after_open(self, text: str) -> None:
        """A frame sent before the snapshot went out: taken once it has, as Tornado's sockets did."""
        if self.waiting is None:
            self.waiting = asyncio.get_running_loop().create_future()
        await asyncio.shield(self.waiting)
        pending = self.on_text(text)
        if pending is not None:
            await pending

    async def post(self, text: str) -> None:
        """Have it reviewed, store it; its echo is the answer that it was sent, an error frame that it was not."""
        review = self.chat.review
        if review is not None:
            try:
                text = await review.text(self.group_id, self.user_id, text)
            except MessageRejected as refusal:
                self.refuse("rejected", frames.ERROR_REJECTED, refusal.reason)
                return
            except HookFailed:
                self.refuse("hook_failed", frames.ERROR_UNAVAILABLE,
                            "the application could not review the message; it was not sent")
                return
        try:
            message = await self.chat.messages.post(self.group_id, self.user_id, text)
        except NotReplicated:
            self.context.metrics.storage_errors.inc()
            self.refuse("not_replicated", frames.ERROR_OUTCOME_UNKNOWN,
                        "the message was stored and delivered, but no replica confirmed it in time; "
                        "a failover may lose it")
            return
        except OutcomeUnknown:
            self.context.metrics.storage_errors.inc()
            self.refuse("unknown", frames.ERROR_OUTCOME_UNKNOWN,
                        "storage stopped answering; the message may or may not have been stored")
            return
        except StorageUnavailable:
            self.context.metrics.storage_errors.inc()
            self.refuse("unavailable", frames.ERROR_UNAVAILABLE, "storage unavailable; the message was not sent")
            return
        self.context.metrics.messages_received.inc()
        if self.ack:
            self.send(frames.ack_frame(message))

    def enter_presence(self) -> None:
        """Count this socket online in its group, once it is in the room (unless it closed meanwhile)."""
        if self.chat.presence is not None and not self.closed and not self.present:
            self.present = True
            self.chat.presence.enter(self.group_id, self.user_id)

    def on_closed(self) -> None:
        super().on_closed()
        if self.present:
            self.present = False
            self.chat.presence.exit(self.group_id, self.user_id)
        if self.joined:
            self.joined = False
            self.chat.hub.leave(self.group_id, self)
